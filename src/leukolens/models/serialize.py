"""Reading and writing model checkpoints: one payload dict, float16 weights when asked, atomic writes, clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from leukolens.io.common import LeukolensError, atomic_write_bytes


def write_payload(path: str | Path, payload: dict, state_dict: dict[str, torch.Tensor], *, half: bool) -> Path:
    """Save ``payload`` with ``state_dict`` (float weights in float16 when ``half``) atomically."""
    payload = dict(payload)
    payload["state_dict"] = {
        k: v.detach().half() if half and v.is_floating_point() else v.detach() for k, v in state_dict.items()
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def read_payload(path: str | Path, *, format: str, missing: str, kind: str) -> dict:
    """The payload of a checkpoint of ``format``.

    Raises:
        LeukolensError: missing (``missing`` says what), unreadable, or not a ``kind`` checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise LeukolensError(f"{path}: {missing}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a corrupt file
        raise LeukolensError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != format:
        raise LeukolensError(f"{path}: not a leukolens {kind} checkpoint (expected format {format})")
    return payload
