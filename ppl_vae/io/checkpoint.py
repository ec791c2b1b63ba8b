"""Atomic, validated checkpoints.

A checkpoint is a ``torch.save`` of a dict of tensors and plain values (loadable with
``weights_only=True``: no pickled code runs on load). It is written to a temporary file in the
same directory, flushed and fsync'ed, then renamed over the target with ``os.replace`` — so a
crash or a failed run never leaves a half-written checkpoint, and the last good one stays.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from ppl_vae.errors import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "atomic_write_bytes", "weights_id",
           "checkpoint_id", "FORMAT", "VERSION"]

FORMAT = "ppl_vae.io.checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "config", "model", "guide")


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    _atomic(Path(path), lambda f: f.write(data))


def weights_id(payload: dict) -> str:
    """A short content hash (12 hex digits) of a payload's model and guide weights: the same
    weights give the same id, whichever file they are in."""
    h = hashlib.sha256()
    for part in ("model", "guide"):
        for name, value in sorted((payload.get(part) or {}).items()):
            h.update(f"{part}.{name}".encode())
            if isinstance(value, torch.Tensor):
                t = value.detach().cpu().contiguous()
                h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            else:
                h.update(repr(value).encode())
    return h.hexdigest()[:12]


def checkpoint_id(payload: dict) -> str:
    """The id a derived file records for the checkpoint it came from: the stored
    ``checkpoint_id`` (see :func:`weights_id`), computed for a checkpoint that lacks one."""
    return str(payload.get("checkpoint_id") or weights_id(payload))


def save_checkpoint(path, payload: dict) -> None:
    """Atomically save ``payload`` (must contain config, model and guide state dicts)."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    _atomic(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load and validate a checkpoint; :class:`CheckpointError` names the file and the problem."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, unpickling refused, ...
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint, cannot be read ({type(exc).__name__}: "
            f"{first[:160]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ppl_vae checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('version')} is not supported "
            f"(this ppl_vae reads version {VERSION})"
        )
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return payload
