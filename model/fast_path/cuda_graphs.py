"""CUDA graphs around model.step: one captured supervision step per batch-size bucket.

A step is T*(K+1)*layers small launches; replaying a captured graph removes the per-launch CPU cost,
which dominates at serving batch sizes. The engine wraps the model once:

    step = GraphedStep(model)            # pass-through on CPU (or when disabled)
    out = step(h, l, e_x, noise)         # same signature and StepOutput as model.step

A batch of B slots runs in the smallest bucket >= B: inputs are copied into the bucket's static buffers
(rows past B keep whatever finite state they last held; every op is row-independent, so they cannot
affect real rows), the graph is replayed, and the first B rows of the outputs are returned as fresh
tensors (the static outputs are overwritten by the next replay). Batches above the largest bucket run
eagerly. Graphs are captured lazily, on first use of a bucket, after warm-up calls that also run any
Triton autotuning outside the capture.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

DEFAULT_MAX_BATCH = 4096


def default_buckets(max_batch: int = DEFAULT_MAX_BATCH, smallest: int = 8) -> tuple[int, ...]:
    """Powers of two from ``smallest`` up to max_batch, and max_batch itself: padding wastes < 2x."""
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    out = []
    b = min(smallest, max_batch)
    while b < max_batch:
        out.append(b)
        b *= 2
    out.append(max_batch)
    return tuple(out)


def bucket_for(batch: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket >= batch, or None when batch exceeds them all."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    ordered = sorted(buckets)
    i = bisect.bisect_left(ordered, batch)
    return ordered[i] if i < len(ordered) else None


class _Replay:
    """A captured (or, for tests, emulated) step on static buffers."""

    def __init__(self, run: Callable[[], None], inputs: dict[str, Any], outputs: Any) -> None:
        self.run = run
        self.inputs = inputs
        self.outputs = outputs


class GraphedStep:
    """model.step with one CUDA graph per batch-size bucket.

    enabled: None = on when the model is on CUDA. emulate=True replays by calling model.step on the
    static buffers instead of a captured graph: the bucketing, padding and copying logic then runs (and
    is tested) on a CPU.
    """

    def __init__(self, model: Any, buckets: Sequence[int] | None = None, enabled: bool | None = None,
                 emulate: bool = False, warmup: int = 2) -> None:
        self.model = model
        self.buckets = tuple(sorted(set(buckets or default_buckets())))
        if enabled is None:
            enabled = model.device.type == "cuda" and torch.cuda.is_available()
        self.enabled = enabled or emulate
        self.emulate = emulate
        self.warmup = warmup
        self._replays: dict[tuple[Any, ...], _Replay] = {}
        self._pool: Any = None
        self.captures = 0
        self.eager_calls = 0

    def __call__(self, h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor, noise: Any,
                 x: torch.Tensor | None = None) -> Any:
        batch = h.shape[0]
        noise = noise.with_unit_temperature(batch, h.device)  # a graph has one shape of inputs
        bucket = bucket_for(batch, self.buckets) if self.enabled and batch > 0 else None
        if bucket is None:
            self.eager_calls += 1
            return self.model.step(h, l, e_x, noise, x)
        key = (bucket, tuple(h.shape[1:]), tuple(e_x.shape[1:]), h.dtype, e_x.dtype, h.device, x is None)
        replay = self._replays.get(key)
        if replay is None:
            replay = self._replays[key] = self._capture(bucket, h, l, e_x, noise, x)
        self._load(replay.inputs, batch, h, l, e_x, noise, x)
        replay.run()
        return _first_rows(replay.outputs, batch)

    # ---- internals ---------------------------------------------------------------------------------
    def _static_inputs(self, bucket: int, h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor,
                       noise: Any, x: torch.Tensor | None) -> dict[str, Any]:
        def buf(t: torch.Tensor) -> torch.Tensor:
            out = torch.zeros((bucket, *t.shape[1:]), dtype=t.dtype, device=t.device)
            out[: t.shape[0]].copy_(t)
            if t.shape[0] < bucket and t.is_floating_point():
                out[t.shape[0]:].copy_(t[:1].expand(bucket - t.shape[0], *t.shape[1:]))
            return out

        key_fields = {f.name: buf(getattr(noise, f.name).to(h.device)) for f in dataclasses.fields(noise)}
        return {"h": buf(h), "l": buf(l), "e_x": buf(e_x), "noise": dataclasses.replace(noise, **key_fields),
                "x": None if x is None else buf(x.to(h.device))}

    @staticmethod
    def _load(inputs: dict[str, Any], batch: int, h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor,
              noise: Any, x: torch.Tensor | None) -> None:
        inputs["h"][:batch].copy_(h)
        inputs["l"][:batch].copy_(l)
        inputs["e_x"][:batch].copy_(e_x)
        for f in dataclasses.fields(noise):
            getattr(inputs["noise"], f.name)[:batch].copy_(getattr(noise, f.name))
        if x is not None:
            inputs["x"][:batch].copy_(x)

    def _capture(self, bucket: int, h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor,
                 noise: Any, x: torch.Tensor | None) -> _Replay:
        inputs = self._static_inputs(bucket, h, l, e_x, noise, x)

        def step() -> Any:
            return self.model.step(inputs["h"], inputs["l"], inputs["e_x"], inputs["noise"], inputs["x"])

        self.captures += 1
        if self.emulate:
            outputs = step()

            def rerun() -> None:
                fresh = step()
                for f in dataclasses.fields(outputs):
                    value = getattr(outputs, f.name)
                    if isinstance(value, torch.Tensor):
                        value.copy_(getattr(fresh, f.name))

            return _Replay(rerun, inputs, outputs)
        # Warm up on a side stream (lazy inits, cuBLAS handles, Triton compilation and autotuning must
        # all happen outside the capture), then capture into a pool shared by every bucket.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                step()
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            outputs = step()
        return _Replay(graph.replay, inputs, outputs)


def _first_rows(outputs: Any, batch: int) -> Any:
    def rows(value: Any) -> Any:
        return value[:batch].clone() if isinstance(value, torch.Tensor) and value.dim() > 0 else value

    fields = dataclasses.fields(outputs)
    return dataclasses.replace(outputs, **{f.name: rows(getattr(outputs, f.name)) for f in fields})
