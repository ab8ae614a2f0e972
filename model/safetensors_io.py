"""Read and write the safetensors format with torch and the stdlib only.

model/ must run where only torch is installed, so this implements the (small, documented) format itself:
8-byte little-endian header size N, N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__":
{str: str}}, then the raw little-endian tensor bytes. No pickle anywhere. The tests check byte-level
compatibility with the reference ``safetensors`` package.
"""

from __future__ import annotations

import ctypes
import json
import struct
import sys
from pathlib import Path

import torch

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    if sys.byteorder != "little":  # pragma: no cover - every supported machine is little-endian
        raise RuntimeError("safetensors_io supports little-endian hosts only")
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()) if t.numel() else b""


def save(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (any devices; stored contiguous on CPU) and string ``metadata`` to ``path``
    atomically (temp file + rename), so a crash never leaves a half-written checkpoint."""
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _NAMES:
            raise TypeError(f"tensor {name!r}: dtype {t.dtype} is not supported")
        blob = _tensor_bytes(t)
        header[name] = {
            "dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8-byte alignment with spaces
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
    tmp.replace(path)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, without reading its tensors."""
    with open(path, "rb") as f:
        return dict(_read_header(f, Path(path)).get("__metadata__", {}))


def load(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file."""
    path = Path(path)
    with open(path, "rb") as f:
        header = _read_header(f, path)
        data = f.read()
    metadata = dict(header.pop("__metadata__", {}))
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(data):
            raise ValueError(f"{path}: tensor {name!r} lies outside the file")
        buf = bytearray(data[start:end])  # a writable copy: frombuffer warns on read-only memory
        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"]).to(device)
    return tensors, metadata


def _read_header(f, path: Path) -> dict:  # type: ignore[no-untyped-def]
    head = f.read(8)
    if len(head) != 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (size,) = struct.unpack("<Q", head)
    if size > _MAX_HEADER:
        raise ValueError(f"{path}: not a safetensors file (header size {size})")
    try:
        return json.loads(f.read(size))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a safetensors file ({err})") from err
