"""What commands and benchmarks write: CSV rows, JSON-safe values, the device, peak memory."""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

import numpy as np
import torch

from ppl_vae.errors import ConfigError
from ppl_vae.io.checkpoint import atomic_write_bytes

__all__ = ["append_csv", "check_same_run", "json_safe", "markdown_table", "peak_rss_mb",
           "resolve_device"]


def _cell(value, integer: bool) -> str:
    """A CSV cell as pandas writes it: empty for None/NaN, ``repr`` of a float (``50`` for a
    whole number in an integer column), ``True``/``False``, ``str`` of anything else."""
    if value is None:
        return ""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return ""
        return str(int(value)) if integer and value.is_integer() else repr(value)
    return str(value)


def _read_csv(path: Path):
    """``(header, rows)`` of the CSV at ``path`` (rows as lists of strings), or None when it is
    missing, empty or not a CSV."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return (lines[0], lines[1:]) if lines else None


def append_csv(path, row: dict, columns=(), integers=()) -> None:
    """Append ``row`` to the CSV at ``path`` atomically: the columns are the union of the old and
    new ones (``columns`` first, in that order), the old rows are kept cell for cell, the new
    row's cells written as pandas writes them (the ``integers`` columns as integers: ``50``, not
    ``50.0``; a missing value is an empty cell). No pandas import (``ppl-vae evaluate`` would
    spend a quarter of a second on it)."""
    path = Path(path)
    old = _read_csv(path)
    header, rows = (list(old[0]), old[1]) if old else ([], [])
    header += [c for c in row if c not in header]
    cols = [c for c in columns if c in header] + [c for c in header if c not in columns]
    integers = set(integers)
    records = [dict(zip(old[0], r)) for r in rows] if old else []
    records.append({c: _cell(v, c in integers) for c, v in row.items()})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    writer.writerows([[rec.get(c, "") for c in cols] for rec in records])
    atomic_write_bytes(path, buf.getvalue().encode())


def check_same_run(path, run_id, column: str = "run_id") -> None:
    """Refuse (one line, :class:`ConfigError`) to add to the CSV at ``path`` when its rows
    name another training run than ``run_id``: they describe a different model."""
    path = Path(path)
    old = _read_csv(path) if run_id is not None else None
    if old is None or column not in old[0]:
        return
    i = old[0].index(column)
    others = sorted({r[i] for r in old[1] if len(r) > i and r[i]} - {str(run_id)})
    if others:
        raise ConfigError(
            f"{path} holds rows of another run (run id {others[0]}; this checkpoint is of run "
            f"{run_id}): move it away, or train with --overwrite, which archives it")


def json_safe(value):
    """A value ``json.dumps(..., allow_nan=False)`` accepts: NaN/inf -> None, numpy and torch
    scalars and arrays -> Python numbers and lists, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (NaN where the OS does not say)."""
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20
    except (ImportError, OSError):  # pragma: no cover - non-POSIX
        return math.nan


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, with one clear error for a bad name or a missing CUDA."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"--device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    return device


def markdown_table(df, floatfmt: str = ".2f") -> str:
    """A GitHub markdown table of a DataFrame (no extra dependency; NaN prints as an empty cell)."""
    import math

    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
