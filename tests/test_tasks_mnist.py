"""Binarized MNIST: IDX loading, binarization, patch tokens, PNG rendering, the Task surface."""

from __future__ import annotations

import gzip
import io
import random
import struct
from pathlib import Path

import pytest
import torch

from model.tasks.base import TaskInputError
from model.tasks.mnist import (
    TASK,
    binarize,
    default_root,
    from_tokens,
    load_mnist,
    parse_idx_images,
    render_grid_png,
    to_tokens,
)

HAVE_DATA = (default_root() / "train-images.idx3-ubyte.gz").is_file()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"MNIST files not in {default_root()}")


def write_idx(folder: Path, images: torch.Tensor, name: str = "t10k-images.idx3-ubyte.gz") -> None:
    n, rows, cols = images.shape
    raw = struct.pack(">IIII", 0x803, n, rows, cols) + bytes(images.reshape(-1).tolist())
    (folder / name).write_bytes(gzip.compress(raw))


def test_loader_reads_idx_from_env_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    write_idx(tmp_path, images)
    monkeypatch.setenv("GRAM_MNIST_DIR", str(tmp_path))
    assert torch.equal(load_mnist(split="test"), images)
    with pytest.raises(FileNotFoundError, match="set GRAM_MNIST_DIR"):
        load_mnist(split="train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_mnist(split="validation")


def test_idx_parser_rejects_bad_files() -> None:
    with pytest.raises(ValueError, match="not an IDX3 ubyte image file"):
        parse_idx_images(struct.pack(">IIII", 0x801, 1, 28, 28) + bytes(784))
    with pytest.raises(ValueError, match="784 pixel bytes for 2 images"):
        parse_idx_images(struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(784))
    with pytest.raises(ValueError, match="too short"):
        parse_idx_images(b"\x00\x00")


def test_binarize_thresholds_at_half() -> None:
    pixels = torch.tensor([[0, 127, 128, 255]], dtype=torch.uint8)
    assert binarize(pixels).tolist() == [[False, False, True, True]]


def test_patch_tokens_layout_and_round_trip() -> None:
    bits = torch.zeros(2, 28, 28, dtype=torch.bool)
    bits[0, 0, 4] = True  # patch 1 (row 0, col 1 of the 7x7 grid), pixel 0
    bits[0, 1, 0] = True  # patch 0, pixel 4 (second row of the patch)
    bits[1, 27, 27] = True  # last patch, last pixel
    y = to_tokens(bits)
    assert y.shape == (2, 49, 16) and y.dtype == torch.long
    assert set(y.unique().tolist()) == {1, 2}
    assert y[0, 1, 0] == 2 and y[0, 0, 4] == 2 and y[1, 48, 15] == 2
    assert int((y == 2).sum()) == 3
    assert torch.equal(from_tokens(y), bits)


def test_png_grid_shows_the_images() -> None:
    from PIL import Image

    bits = torch.zeros(3, 28, 28, dtype=torch.bool)
    bits[1, 10:20, 5] = True
    png = render_grid_png(bits, columns=2, scale=1)
    image = Image.open(io.BytesIO(png))
    assert image.size == (2 + 2 * 30, 2 + 2 * 30)
    assert image.getpixel((2 + 30 + 5, 2 + 15)) == 255  # second image's ink
    assert image.getpixel((2 + 5, 2 + 15)) == 0
    with pytest.raises(ValueError, match="at least one image"):
        render_grid_png(bits[:0])


def test_task_surface() -> None:
    instance = TASK.parse({})
    assert instance.x.shape == (49, 1) and bool((instance.x == 1).all())
    with pytest.raises(TaskInputError, match="JSON object"):
        TASK.parse([])  # type: ignore[arg-type]
    bits = torch.rand(4, 28, 28) > 0.7
    y = to_tokens(bits)
    xs = instance.x.expand(4, -1, -1)
    assert TASK.verify(y, xs).all()
    bad = y.clone()
    bad[2, 7, 3] = 0
    assert TASK.verify(bad, xs).tolist() == [True, True, False, True]
    rows = TASK.format(instance, y[0])
    assert len(rows) == 28 and all(len(r) == 28 and set(r) <= {"0", "1"} for r in rows)
    assert rows[3][5] == ("1" if bits[0, 3, 5] else "0")
    assert TASK.answer_mask(instance.x).shape == (49, 16) and TASK.answer_mask(instance.x).all()
    with pytest.raises(NotImplementedError, match="no exact solver"):
        TASK.solve(instance, cap=1)
    x2, y2 = TASK.augment(instance.x, y[0], random.Random(0))
    assert torch.equal(y2, y[0])


@needs_data
def test_real_mnist_files() -> None:
    images = load_mnist(split="test")
    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    sample = images[:300].to(torch.float32) / 255
    assert 0.10 < float(sample.mean()) < 0.16  # the set's mean is 0.13
    bits = binarize(images[:300])
    assert torch.equal(from_tokens(to_tokens(bits)), bits)
    a = TASK.generate(random.Random(1))
    b = TASK.generate(random.Random(1))
    assert a[0].meta == b[0].meta and torch.equal(a[1], b[1])
    assert TASK.verify(a[1][None], a[0].x[None]).all()
