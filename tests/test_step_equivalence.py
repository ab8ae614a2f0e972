"""What one supervision step computes, on every step path, against values recorded before the kernels /
model layering change of issue 19 (tests/data/step_equivalence.json): a refactor of how a step is run
must not change what it computes.

Per family, a tiny seeded model (random heads, two layers; Sudoku with the sequence mixer) runs two
supervision steps for two slots with fixed noise keys and prior temperatures, on inputs with all-PAD
positions. Paths: the torch references, the Triton kernels (the interpreter on a CPU), the fused
low-level update, and the CPU paths bf16 and bf16+compile. Tokens must be equal; floats within the
tolerance of the path (the kernel tests' for fp32, a few bf16 ulps for bf16).

Re-record only when a change is meant to alter the numbers:

    TRITON_INTERPRET=1 .venv/bin/python -m tests.test_step_equivalence --record
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels.backend import kernels_mode  # noqa: E402
from model.gram import GRAM, NoiseKeys, tiny_model  # noqa: E402
from model.step_impl import StepImpl  # noqa: E402
from tests.kernel_fixtures import one_thread  # noqa: E402, F401

GOLDEN = Path(__file__).parent / "data" / "step_equivalence.json"
FAMILIES: dict[str, dict[str, Any]] = {
    "sudoku": {"mixer": "mlp_t"}, "nqueens": {}, "graph_coloring": {}, "mnist": {},
}
PATHS = ("torch", "triton", "triton+fused", "bf16", "bf16+compile")
# The golden file holds every (family, path). The suite checks every family on the torch and bf16 paths
# and a subset on the slow ones (the Triton interpreter: 5-20 s a case here, compiling: ~50 s): one
# family per mixer for Triton, the short-form attention for bf16+compile. GRAM_STEP_EQUIVALENCE=all
# checks everything (what a change to the step paths should run once).
SLOW = {"triton": ("sudoku", "nqueens"), "triton+fused": ("sudoku", "nqueens"), "bf16+compile": ("nqueens",)}
RECORDED_COMPILED = ("sudoku", "nqueens")  # bf16+compile cases in the golden file
# (rtol, atol) per path; tokens are compared exactly.
TOLERANCE = {"torch": (1e-5, 1e-5), "triton": (1e-4, 1e-4), "triton+fused": (1e-4, 1e-4),
             "bf16": (1e-2, 2e-2), "bf16+compile": (1e-2, 2e-2)}


def _model(task: str) -> GRAM:
    model = tiny_model(task, seed=3, n_layers=2, **FAMILIES[task])
    gen = torch.Generator().manual_seed(7)  # the zero-initialised heads would agree trivially
    with torch.no_grad():
        for head in (model.prior.proj, model.halt_head, model.value_head):
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.05)
    return model


def _inputs(model: GRAM) -> torch.Tensor:
    """x int64 [2, L, G]: random tokens, with all-PAD positions (off-board cells, absent nodes)."""
    c = model.config
    gen = torch.Generator().manual_seed(11)
    x = torch.randint(1, c.in_vocab, (2, c.seq_len, c.in_group), generator=gen)
    x[0, -3:] = 0
    x[1, :2] = 0
    return x


def _keys(step: int) -> NoiseKeys:
    return NoiseKeys(seed=torch.tensor([5, 6]), traj=torch.tensor([0, 1]), step=torch.tensor([step, step]),
                     temperature=torch.tensor([1.0, 1.5]))


def _step_fn(model: GRAM, path: str) -> Any:
    if path in ("torch", "triton"):
        return model.step
    if path == "triton+fused":
        return copy.deepcopy(model).use_impl(StepImpl(fused=True)).step
    from model.fast_path.cpu_path import make_step

    return make_step(model, path)


def _summary(out: Any) -> dict[str, Any]:
    def floats(t: torch.Tensor) -> list[Any]:
        return torch.round(t.double(), decimals=7).tolist()

    return {
        "tokens": out.tokens.tolist(),
        "token_logprob": floats(out.token_logprob.sum(-1)),  # [B, L]
        "q_halt": floats(out.q_halt), "value": floats(out.value),
        "h_sum": floats(out.h.double().sum(-1)), "h_sq": floats(out.h.double().pow(2).sum(-1)),  # [B, P+L]
        "l_sum": floats(out.l.double().sum(-1)),
    }


def run(task: str, path: str, calls: tuple[str, ...] = ("e_x",)) -> dict[str, list[dict[str, Any]]]:
    """Summaries of two chained supervision steps of ``task``'s tiny model on ``path``, per way of calling
    the step: "e_x" (no tokens: PAD positions read off e_x, as recorded) and "tokens" (the input tokens
    passed as x: PAD positions from them)."""
    model = _model(task)
    mode = "triton" if path.startswith("triton") else "torch"
    out: dict[str, list[dict[str, Any]]] = {}
    with kernels_mode(mode), torch.no_grad():
        step = _step_fn(model, path)
        x = _inputs(model)
        e_x = model.encode(x)
        for call in calls:
            h, l = model.init_state(2)
            out[call] = []
            for n in range(2):
                res = step(h, l, e_x, _keys(n), x) if call == "tokens" else step(h, l, e_x, _keys(n))
                out[call].append(_summary(res))
                h, l = res.h, res.l
    return out


def cases(every: bool = True) -> list[tuple[str, str]]:
    """(family, path) pairs: every recorded one, or the suite's share (SLOW)."""
    return [(task, path) for task in FAMILIES for path in PATHS
            if (path != "bf16+compile" or task in RECORDED_COMPILED)
            and (every or path not in SLOW or task in SLOW[path])]


@pytest.mark.parametrize(("task", "path"), cases(os.environ.get("GRAM_STEP_EQUIVALENCE") == "all"))
def test_step_outputs_match_the_recorded_ones(task: str, path: str) -> None:
    want = json.loads(GOLDEN.read_text())[f"{task}/{path}"]
    calls = ("e_x",) if path.startswith("triton") else ("e_x", "tokens")  # the interpreter is slow
    for call, got in run(task, path, calls).items():
        _assert_matches(got, want, path, call)


def _assert_matches(got: list[dict[str, Any]], want: list[dict[str, Any]], path: str, call: str) -> None:
    rtol, atol = TOLERANCE[path]
    for n, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g["tokens"] == w["tokens"], f"{call} step {n}: tokens differ"
        for name in ("token_logprob", "q_halt", "value", "h_sum", "h_sq", "l_sum"):
            # sums over D: the tolerance scales with their size
            sums = name in ("h_sum", "h_sq", "l_sum")
            scale = max(1.0, torch.tensor(w[name]).abs().max().item()) if sums else 1.0
            got_t, want_t = torch.tensor(g[name]), torch.tensor(w[name])
            torch.testing.assert_close(got_t, want_t, rtol=rtol, atol=atol * scale,
                                       msg=lambda m, n=n, k=name: f"{call} step {n} {k}: {m}")


def record() -> None:
    torch.set_num_threads(1)
    golden = {f"{task}/{path}": run(task, path)["e_x"] for task, path in cases()}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, separators=(",", ":")) + "\n")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes, {len(golden)} cases)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    record()
