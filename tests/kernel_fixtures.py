"""Fixtures shared by the kernel test modules (imported by name there, so they stay autouse only for
those modules rather than for the whole suite, as a conftest.py would make them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from kernels.backend import kernels_mode


@pytest.fixture(autouse=True)
def one_thread():
    """Small shapes: one intra-op thread avoids OpenMP barrier stalls when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def triton_mode() -> Iterator[None]:
    """Route kernels.ops to the Triton kernels (the interpreter on CPU)."""
    with kernels_mode("triton"):
        yield


@pytest.fixture
def torch_kernels() -> Iterator[None]:
    """Route kernels.ops to the torch references for one test."""
    with kernels_mode("torch"):
        yield
