"""What commands and benchmarks write: CSV rows, JSON-safe values, the device, peak memory."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from ppl_vae.errors import ConfigError
from ppl_vae.io.checkpoint import atomic_write_bytes

__all__ = ["append_csv", "check_same_run", "json_safe", "markdown_table", "peak_rss_mb",
           "resolve_device"]


def append_csv(path, row: dict, columns=(), integers=()) -> None:
    """Append ``row`` to the CSV at ``path`` atomically (pandas; the columns are the union of
    the old and new ones, ``columns`` first in that order). The ``integers`` columns stay
    integers (``50``, not ``50.0``; a missing value is an empty cell)."""
    import pandas as pd

    path = Path(path)
    new = pd.DataFrame([row])
    if path.exists() and path.stat().st_size > 0:
        new = pd.concat([pd.read_csv(path), new], ignore_index=True)
    for col in integers:
        if col in new.columns:
            values = pd.to_numeric(new[col], errors="coerce")
            known = values.dropna()
            if len(known) == values.notna().sum() == new[col].notna().sum() and (
                    known == known.round()).all():
                new[col] = values.astype("Int64")
    cols = [c for c in columns if c in new.columns] + [c for c in new.columns if c not in columns]
    atomic_write_bytes(path, new[cols].to_csv(index=False).encode())


def check_same_run(path, run_id, column: str = "run_id") -> None:
    """Refuse (one line, :class:`ConfigError`) to add to the CSV at ``path`` when its rows
    name another training run than ``run_id``: they describe a different model."""
    import pandas as pd

    path = Path(path)
    if run_id is None or not path.is_file() or path.stat().st_size == 0:
        return
    try:
        old = pd.read_csv(path, usecols=lambda c: c == column, dtype=str)
    except (ValueError, pd.errors.ParserError):
        return
    if column not in old.columns:
        return
    others = sorted(set(old[column].dropna()) - {str(run_id)})
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
