"""Binarized MNIST: unconditional image generation.

Tokens: the 28 x 28 image is cut into 7 x 7 = 49 non-overlapping 4 x 4 patches (L = 49, row-major over
patches); each position's 16 output sub-tokens are the patch's pixels row-major, 1 black (bit 0) and
2 white (bit 1, the digit's ink). The input is blank (token 1 everywhere): generation is unconditional.

Binarization: the fixed threshold x / 255 > 0.5 (not per-epoch Bernoulli sampling), so a training
image always has the same tokens.

The data set is the standard gzipped IDX files in ``GRAM_MNIST_DIR`` or the repository's ``data/mnist``.
Nothing needs that folder until ``load_mnist`` (or ``generate``) is called; then a missing file is a
clear ``FileNotFoundError``.

There is no exact solver (any image is a valid sample): ``verify`` only checks that every pixel token is
black or white, ``solve`` raises NotImplementedError, and ``generate`` draws a training image.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import random
import struct
from pathlib import Path
from typing import Any

import torch

from model.tasks.base import PAD, Instance, TaskInputError, TaskSpec
from model.tasks.datasets import GeneratedPairs
from model.tasks.tensors import check_batch, small_ints_key

SIDE = 28
PATCH = 4
GRID = SIDE // PATCH  # 7 patches per side
BLACK, WHITE = 1, 2
BLANK_INPUT = 1
SPEC = TaskSpec(seq_len=GRID * GRID, in_group=1, in_vocab=2, out_group=PATCH * PATCH, out_vocab=3)
SPLITS = {"train": "train-images.idx3-ubyte.gz", "test": "t10k-images.idx3-ubyte.gz"}
LABEL_FILES = {"train": "train-labels.idx1-ubyte.gz", "test": "t10k-labels.idx1-ubyte.gz"}
IDX_UBYTE_3D = 0x00000803  # IDX magic: unsigned bytes, 3 dimensions
IDX_UBYTE_1D = 0x00000801  # ... 1 dimension (the label files)


def default_root() -> Path:
    """``GRAM_MNIST_DIR`` if set, else ``data/mnist`` in the repository (a source checkout)."""
    env = os.environ.get("GRAM_MNIST_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data" / "mnist"


def load_mnist(root: str | Path | None = None, split: str = "train") -> torch.Tensor:
    """uint8 [N, 28, 28] images of ``split`` ("train" 60,000 or "test" 10,000) from the IDX files."""
    file = _split_file(root, split, SPLITS, "images")
    with gzip.open(file, "rb") as fh:
        raw = fh.read()
    return parse_idx_images(raw, str(file))


def load_mnist_labels(root: str | Path | None = None, split: str = "train") -> torch.Tensor:
    """int64 [N] digit labels of ``split``, in the order of ``load_mnist``'s images."""
    file = _split_file(root, split, LABEL_FILES, "labels")
    with gzip.open(file, "rb") as fh:
        raw = fh.read()
    if len(raw) < 8:
        raise ValueError(f"{file}: too short for an IDX header ({len(raw)} bytes)")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != IDX_UBYTE_1D or len(raw) != 8 + count:
        raise ValueError(f"{file}: not an IDX1 ubyte label file of {count} labels (magic {magic:#010x})")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=8).to(torch.int64)


def _split_file(root: str | Path | None, split: str, files: dict[str, str], what: str) -> Path:
    if split not in files:
        raise ValueError(f"split must be one of {sorted(files)}, got {split!r}")
    path = Path(root) if root is not None else default_root()
    file = path / files[split]
    if not file.is_file():
        raise FileNotFoundError(
            f"MNIST {split} {what} not found at {file}; set GRAM_MNIST_DIR to the folder holding "
            f"{files[split]}"
        )
    return file


def parse_idx_images(raw: bytes, source: str = "<bytes>") -> torch.Tensor:
    """uint8 [N, rows, cols] from the bytes of an uncompressed IDX3 image file."""
    if len(raw) < 16:
        raise ValueError(f"{source}: too short for an IDX header ({len(raw)} bytes)")
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != IDX_UBYTE_3D:
        raise ValueError(f"{source}: not an IDX3 ubyte image file (magic {magic:#010x})")
    if len(raw) != 16 + count * rows * cols:
        raise ValueError(f"{source}: {len(raw) - 16} pixel bytes for {count} images of {rows}x{cols}")
    pixels = torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=16)
    return pixels.reshape(count, rows, cols)


def binarize(images: torch.Tensor) -> torch.Tensor:
    """bool [..., 28, 28]: pixel / 255 > 0.5 (ink = True)."""
    return images.to(torch.float32) / 255.0 > 0.5


def to_tokens(bits: torch.Tensor) -> torch.Tensor:
    """bits [B, 28, 28] -> y LongTensor [B, 49, 16] (4x4 patches row-major; 1 black, 2 white)."""
    b = bits.shape[0]
    patches = bits.to(torch.long).reshape(b, GRID, PATCH, GRID, PATCH).permute(0, 1, 3, 2, 4)
    return patches.reshape(b, GRID * GRID, PATCH * PATCH) + BLACK


def from_tokens(y: torch.Tensor) -> torch.Tensor:
    """y [B, 49, 16] -> bool bits [B, 28, 28] (white = True); inverse of ``to_tokens``."""
    b = y.shape[0]
    patches = (y == WHITE).reshape(b, GRID, GRID, PATCH, PATCH).permute(0, 1, 3, 2, 4)
    return patches.reshape(b, SIDE, SIDE)


def render_grid_png(bits: torch.Tensor, columns: int | None = None, scale: int = 2) -> bytes:
    """PNG bytes of samples [N, 28, 28] tiled in a grid (white ink on black), each pixel ``scale`` wide."""
    from PIL import Image  # lazily: only rendering needs Pillow

    n = bits.shape[0]
    if n == 0:
        raise ValueError("render_grid_png needs at least one image")
    cols = columns or min(n, 8)
    rows = -(-n // cols)
    gap = 2
    canvas = torch.zeros(rows * (SIDE + gap) + gap, cols * (SIDE + gap) + gap, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = gap + r * (SIDE + gap), gap + c * (SIDE + gap)
        canvas[top : top + SIDE, left : left + SIDE] = bits[i].to(torch.uint8) * 255
    height, width = canvas.shape
    image = Image.frombytes("L", (width, height), bytes(canvas.reshape(-1).tolist()))
    if scale != 1:
        image = image.resize((width * scale, height * scale), Image.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@functools.cache
def _train_bits(root: str | None) -> torch.Tensor:
    """The binarized training set, loaded once per process (60,000 x 784 bools, 47 MB)."""
    return binarize(load_mnist(root, "train"))


class MnistTask(GeneratedPairs):
    name = "mnist"
    spec = SPEC
    unconditional = True  # sampled, not solved: no input, any image is an answer (POST /sample)
    request_model = None  # no /solve body: POST /sample's body is the service's own (service/schemas.py)
    openapi_examples: dict[str, dict[str, Any]] = {}

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = None if root is None else str(root)

    def blank_input(self) -> torch.Tensor:
        return torch.full((SPEC.seq_len, 1), BLANK_INPUT, dtype=torch.long)

    def parse(self, body: dict[str, Any]) -> Instance:
        """Sampling is unconditional: the body carries no task fields, the input is all blank."""
        if not isinstance(body, dict):
            raise TaskInputError(f"request body must be a JSON object, got {type(body).__name__}")
        return Instance(self.name, self.blank_input(), {})

    def format(self, instance: Instance, y: torch.Tensor) -> list[str]:
        """28 strings of 28 '0'/'1' (1 = white ink)."""
        bits = from_tokens(y.unsqueeze(0))[0]
        return ["".join("1" if b else "0" for b in row) for row in bits.tolist()]

    def canonical_key(self, x: torch.Tensor, y: torch.Tensor) -> bytes:
        return small_ints_key(y.reshape(-1).tolist())

    def answer_mask(self, x: torch.Tensor) -> torch.Tensor:
        return (x != PAD).expand(*x.shape[:-1], SPEC.out_group)

    def verify(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Any image is a valid sample: True exactly when every pixel token is black or white."""
        check_batch(self.spec, y, x)
        return ((y == BLACK) | (y == WHITE)).all(-1).all(-1)

    def solve(self, instance: Instance, cap: int) -> list[torch.Tensor]:
        raise NotImplementedError(
            "mnist has no exact solver: it is unconditional generation and any image is a valid sample"
        )

    def generate(self, rng: random.Random, root: str | None = None) -> tuple[Instance, torch.Tensor]:
        """Not a generator: a uniformly drawn binarized training image (the data set is the loader)."""
        bits = _train_bits(root if root is not None else self.root)
        index = rng.randrange(bits.shape[0])
        y = to_tokens(bits[index : index + 1])[0]
        return Instance(self.name, self.blank_input(), {"index": index}), y

    def augment(
        self, x: torch.Tensor, y: torch.Tensor, rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity: digits are not symmetric (a flipped 2 is no digit), and the paper augments nothing."""
        return x, y


TASK = MnistTask()
