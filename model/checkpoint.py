"""Shipped checkpoints: a GRAM's weights (incl. the fixed z0) in safetensors, the config and the model
card's facts in the safetensors metadata. No pickle: a checkpoint can be loaded from an untrusted source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from model import safetensors_io
from model.config import GRAMConfig
from model.gram import GRAM

FORMAT = "gram-serve/1"


def save_checkpoint(model: GRAM, path: str | Path, card: dict[str, Any] | None = None) -> None:
    """Weights as float32 (the loader casts), config and card (JSON) in the metadata."""
    merged = {**model.card, **(card or {})}
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT, "config": model.config.to_json(), "card": json.dumps(merged, sort_keys=True),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    safetensors_io.save(tensors, path, metadata)


def read_config(path: str | Path) -> tuple[GRAMConfig, dict[str, Any]]:
    """(config, card) of a checkpoint without loading its weights."""
    meta = safetensors_io.read_metadata(path)
    return _parse_meta(meta, Path(path))


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> GRAM:
    """The model in eval mode on ``device`` (cast to ``dtype`` when given), with ``.config`` and ``.card``."""
    path = Path(path)
    tensors, meta = safetensors_io.load(path)
    config, card = _parse_meta(meta, path)
    model = GRAM(config, card)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the config (missing {missing}, unexpected {unexpected})"
        )
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval().requires_grad_(False)


def _parse_meta(meta: dict[str, str], path: Path) -> tuple[GRAMConfig, dict[str, Any]]:
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(f"{path}: not a GRAM Serve checkpoint (metadata format {meta.get('format')!r})")
    return GRAMConfig.from_json(meta["config"]), json.loads(meta.get("card", "{}"))
