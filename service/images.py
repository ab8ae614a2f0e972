"""Sampled MNIST digits (28 strings of 28 '0'/'1', the mnist task's format) as base64 PNGs."""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from model.tasks.mnist import render_grid_png


def bits_tensor(images: list[list[str]]) -> torch.Tensor:
    """bool [N, 28, 28] (True = white ink) from the bit-string format."""
    return torch.tensor([[[c == "1" for c in row] for row in img] for img in images], dtype=torch.bool)


def png_base64(bits: torch.Tensor) -> str:
    """One image [28, 28] as a base64 PNG (white ink on black, 1 px per pixel)."""
    height, width = bits.shape
    pixels = bytes((bits.to(torch.uint8) * 255).reshape(-1).tolist())
    out = io.BytesIO()
    Image.frombytes("L", (width, height), pixels).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def grid_png_base64(bits: torch.Tensor) -> str:
    return base64.b64encode(render_grid_png(bits)).decode()
