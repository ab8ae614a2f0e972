"""The loaded models of one process: checkpoints found in GRAM_WEIGHTS_DIR -> one warmed-up Engine each.

    runtime = Runtime(settings)
    runtime.load()                      # blocking: load every checkpoint, warm up, start the engines
    engine = runtime.engine_for_task("sudoku")
    runtime.stop()

A checkpoint is ``<name>.safetensors``; ``<name>`` is the model's name (what ``GRAM_MODELS`` selects and
what responses report), its task comes from the config stored in the checkpoint. When several models
serve one task, the first by name (or by GRAM_MODELS order) answers /solve for it.
``Runtime.from_models`` wraps already-built models (tests, a worker that builds its own).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch

from model.tasks.base import Task
from service import metrics
from service.engine import Engine
from service.queues import ModelInfo
from service.settings import Settings

log = logging.getLogger(__name__)


def find_checkpoints(settings: Settings) -> dict[str, Path]:
    """name -> path of the checkpoints to serve, in GRAM_MODELS order (or by name)."""
    found = {p.stem: p for p in sorted(Path(settings.weights_dir).glob("*.safetensors"))}
    wanted = settings.model_names()
    if not wanted:
        return found
    missing = [name for name in wanted if name not in found]
    if missing:
        raise FileNotFoundError(
            f"GRAM_MODELS names {missing} not found in {settings.weights_dir} (have: {sorted(found)})"
        )
    return {name: found[name] for name in wanted}


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engines: dict[str, Engine] = {}
        self.cards: dict[str, dict[str, Any]] = {}
        self.error: str | None = None  # why loading failed, for /readyz
        self.loaded = threading.Event()
        # name -> (stage, since): queued, loading (reading the checkpoint), preparing (choosing and
        # compiling the step path), warming (first steps at every batch size), ready, failed.
        self.stages: dict[str, tuple[str, float]] = {}
        self._stage_lock = threading.Lock()

    @classmethod
    def from_models(cls, settings: Settings, models: dict[str, tuple[Any, Task]]) -> Runtime:
        """A runtime over models already in memory: name -> (model, task)."""
        runtime = cls(settings)
        for name, (model, task) in models.items():
            runtime._add(name, model, task)
        runtime.loaded.set()
        return runtime

    def load(self) -> None:
        """Load, warm up and start every checkpoint; records the error instead of raising."""
        from model.checkpoint import load_checkpoint  # the heavy import only where checkpoints are read
        from model.tasks.registry import get_task

        try:
            if self.settings.torch_threads:
                torch.set_num_threads(self.settings.torch_threads)
            paths = find_checkpoints(self.settings)
            if not paths:
                raise FileNotFoundError(f"no *.safetensors checkpoints in {self.settings.weights_dir}")
            for name in paths:
                self._stage(name, "queued")
            for name, path in paths.items():
                self._stage(name, "loading")
                model = load_checkpoint(path, self.settings.device)
                self._add(name, model, get_task(model.config.task))
                card_md = path.with_suffix(".md")  # the human-readable model card shipped beside it
                if card_md.is_file():
                    self.cards[name]["markdown"] = card_md.read_text()
                log.info("loaded %s (%s) from %s", name, model.config.task, path)
        except Exception as err:
            log.exception("loading models failed")
            self.error = f"{type(err).__name__}: {err}"
            for name, (stage, _) in list(self.stages.items()):
                if stage != "ready":
                    self._stage(name, "failed")
        finally:
            self.loaded.set()

    def _add(self, name: str, model: Any, task: Task) -> None:
        self._stage(name, "preparing")
        engine = Engine(name, model, task, self.settings)
        if self.settings.warmup:
            self._stage(name, "warming")
            engine.warmup()
        else:
            engine.ready = True
        engine.start()
        self._stage(name, "ready")
        self.engines[name] = engine
        self.cards[name] = _card(model)
        metrics.WORKERS.set(1)

    def _stage(self, name: str, stage: str) -> None:
        now = time.monotonic()
        with self._stage_lock:
            previous = self.stages.get(name)
            self.stages[name] = (stage, now)
        if previous is not None and previous[0] != "queued":
            log.info("model %s: %s took %.1f s; now %s", name, previous[0], now - previous[1], stage)
        elif stage != "queued":
            log.info("model %s: %s", name, stage)

    def progress(self) -> list[dict[str, Any]]:
        """Each model's start-up stage and the seconds it has been in it (what /readyz shows)."""
        now = time.monotonic()
        with self._stage_lock:
            return [{"name": name, "stage": stage, "elapsed_s": round(now - since, 1)}
                    for name, (stage, since) in self.stages.items()]

    @property
    def ready(self) -> bool:
        return self.loaded.is_set() and self.error is None and bool(self.engines) and all(
            e.ready for e in self.engines.values()
        )

    def model_infos(self) -> list[ModelInfo]:
        """The loaded models, in routing order, as GET /models reports them."""
        infos = []
        for name, engine in self.engines.items():
            info = self.cards.get(name, {})
            infos.append(ModelInfo(
                name=name, task=engine.task.name, ready=engine.ready, slots=engine.slots,
                batching=engine.mode.value, n_sup=engine.n_sup, temperature=engine.temperature,
                stall_patience=engine.stall_patience, parameters=info.get("parameters"),
                config=info.get("config", {}), card=info.get("card", {}), markdown=info.get("markdown"),
            ))
        return infos

    def engine_for_task(self, task: str) -> Engine | None:
        for engine in self.engines.values():
            if engine.task.name == task:
                return engine
        return None

    def stop(self) -> None:
        for engine in self.engines.values():
            engine.stop()
        metrics.WORKERS.set(0)


def _card(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    params = None
    if isinstance(model, torch.nn.Module):
        params = sum(p.numel() for p in model.parameters())
    return {
        "config": asdict(config) if is_dataclass(config) and not isinstance(config, type) else {},
        "card": dict(getattr(model, "card", {}) or {}),
        "parameters": params,
    }
