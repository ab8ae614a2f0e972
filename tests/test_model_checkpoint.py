"""Checkpoints: safetensors only (no pickle), config and card in the metadata, exact round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch

from model import safetensors_io
from model.checkpoint import load_checkpoint, read_config, save_checkpoint
from model.gram import NoiseKeys, tiny_model


def test_round_trip_is_exact(tmp_path: Path) -> None:
    model = tiny_model("graph_coloring", seed=5)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, {"name": "gc-test", "train_steps": 3})
    loaded = load_checkpoint(path, "cpu")
    assert loaded.config == model.config
    assert loaded.card["name"] == "gc-test" and loaded.card["train_steps"] == 3
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.ones(2, 16, 18, dtype=torch.long)
    noise = NoiseKeys(torch.tensor([1, 2]), torch.tensor([0, 0]), torch.tensor([0, 0]))
    out_a = model.step(*model.init_state(2), model.encode(x), noise)
    out_b = loaded.step(*loaded.init_state(2), loaded.encode(x), noise)
    assert torch.equal(out_a.h, out_b.h)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_file_is_plain_safetensors_readable_by_the_reference_library(tmp_path: Path) -> None:
    model = tiny_model("mnist")
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    ref = safetensors.torch.load_file(str(path))
    assert torch.equal(ref["z0"], model.z0)
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "gram-serve/1" and '"task": "mnist"' in meta["config"]
    assert b"pickle" not in path.read_bytes()[:8] and path.read_bytes()[:2] != b"\x80\x04"


def test_reader_loads_files_written_by_the_reference_library(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64),
        "c": torch.randn(4).to(torch.bfloat16), "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "ref.safetensors"
    safetensors.torch.save_file(tensors, str(path), metadata={"k": "v"})
    loaded, meta = safetensors_io.load(path)
    assert meta == {"k": "v"}
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k


def test_dtype_cast_on_load(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_model("sudoku"), path)
    model = load_checkpoint(path, "cpu", dtype=torch.bfloat16)
    assert model.pos_emb.dtype == torch.bfloat16 and model.z0.dtype == torch.bfloat16
    cfg, card = read_config(path)
    assert cfg.task == "sudoku" and isinstance(card, dict)


def test_rejects_files_that_are_not_gram_checkpoints(tmp_path: Path) -> None:
    other = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a GRAM Serve checkpoint"):
        load_checkpoint(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 20)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_checkpoint(junk)
