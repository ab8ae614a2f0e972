"""Triton: the decoder epilogue. Per position, argmax over the vocabulary and the log-probability of the
chosen token, so the engine reads back int64 tokens and fp32 scores instead of [.., V] logits.

Ties resolve to the lowest index, as torch.argmax does; the log-softmax is taken in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_util import next_pow2, row_max, row_min, row_sum


@triton.jit
def _decode_kernel(logits_ptr, tok_ptr, lp_ptr, n_rows, V,
                   BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_V)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (cols[None, :] < V)
    # Padding columns are -inf; rows past the end read zeros (not -inf), so no -inf - -inf or log(0)
    # is ever formed, even in lanes that are never stored.
    x = tl.load(logits_ptr + rows[:, None].to(tl.int64) * V + cols[None, :], mask=mask, other=0.0)
    x = tl.where(cols[None, :] < V, x.to(tl.float32), float("-inf"))
    best = row_max(x)
    # Lowest index attaining the max (torch.argmax's tie rule), written out to avoid depending on
    # tl.argmax's tie-break default, which has changed between Triton releases.
    idx = row_min(tl.where(x == best[:, None], cols[None, :], BLOCK_V))
    lse = best + tl.log(row_sum(tl.exp(x - best[:, None])))
    tl.store(tok_ptr + rows, idx.to(tl.int64), mask=row_ok)
    tl.store(lp_ptr + rows, best - lse, mask=row_ok)


def decode_epilogue(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    if vocab < 1:
        raise ValueError("decode_epilogue: empty vocabulary")
    flat = logits.reshape(-1, vocab).contiguous()
    n_rows = flat.shape[0]
    tokens = torch.empty(n_rows, dtype=torch.int64, device=logits.device)
    logprob = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    if n_rows:
        block_v = next_pow2(vocab)
        block_m = max(1, min(256, 8192 // block_v))
        _decode_kernel[(triton.cdiv(n_rows, block_m),)](flat, tokens, logprob, n_rows, vocab,
                                                        BLOCK_M=block_m, BLOCK_V=block_v)
    return tokens.view(lead), logprob.view(lead)
