"""What the benchmark scripts share: the argument-parser base, the data, subsets, interleaved
timing, ratio rows and the markdown writer.

A benchmark writes under its ``--out`` and nowhere else: the default ``--out`` of every script
lies outside the repository (:func:`default_out`), and nothing is written into ``docs/`` unless
a path there is asked for (``paper_table.py --doc docs/paper_table.md``).

Scripts run as ``python benchmarks/NAME.py`` import this module as ``_common`` (the script's
folder is first on ``sys.path``). It imports no part of ``ppl_vae`` at import time.
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = object()  # ``parser(out=REQUIRED)``: --out must be given


# ------------------------------------------------------------------------------------------
# arguments
# ------------------------------------------------------------------------------------------
def default_out(name: str) -> Path:
    """The default ``--out`` of benchmark ``name``: outside the repository, in the temp folder."""
    return Path(tempfile.gettempdir()) / "ppl_vae_benchmarks" / name


def parser(doc: str, *, out=REQUIRED, out_help: str | None = None, threads: bool = False,
           device: bool = False, seed: bool = False, smoke: str | None = None,
           ) -> argparse.ArgumentParser:
    """The argument parser every benchmark starts from: its description is the first paragraph
    of ``doc`` (the script's docstring) and it has the common flags the script uses.

    ``out``: ``REQUIRED``, a default path, or ``None`` for no ``--out`` (the script adds its
    own); ``threads``: ``--threads N`` (see :func:`set_threads`); ``device``: ``--device``
    (default cpu); ``seed``: ``--seed`` (default 0); ``smoke``: the help of ``--smoke`` (also
    spelled ``--quick``; ``args.smoke``), the script's seconds-to-minutes mode.
    """
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if out is REQUIRED:
        p.add_argument("--out", type=Path, required=True,
                       help=out_help or "output folder (every file the benchmark writes)")
    elif out is not None:
        p.add_argument("--out", type=Path, default=Path(out),
                       help=out_help or f"output folder (default {out})")
    if threads:
        p.add_argument("--threads", type=int, default=None,
                       help="torch threads (default: torch's own default)")
    if device:
        p.add_argument("--device", default="cpu")
    if seed:
        p.add_argument("--seed", type=int, default=0)
    if smoke:
        p.add_argument("--smoke", "--quick", dest="smoke", action="store_true", help=smoke)
    return p


def set_threads(threads: int | None, env: dict | None = None) -> None:
    """``torch.set_num_threads(threads)`` here and ``OMP_NUM_THREADS`` in ``env`` (the child
    processes' environment), when ``threads`` is given."""
    if threads:
        import torch

        torch.set_num_threads(threads)
        if env is not None:
            env["OMP_NUM_THREADS"] = str(threads)


def command_line(script: str, argv) -> str:
    """``python benchmarks/SCRIPT.py ARGS``: the command a results file records."""
    return shlex.join(["python", f"benchmarks/{script}.py", *map(str, argv)])


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def mnist_path(required: bool = True) -> Path | None:
    """The binarized-MNIST ``.npz`` (:func:`ppl_vae.io.data.find_binarized_mnist`'s search: the
    environment variable ``PPL_VAE_BINARIZED_MNIST``, then ``../shared/data``); ``SystemExit``
    when absent and ``required``, else ``None``."""
    from ppl_vae.io.data import find_binarized_mnist

    path = find_binarized_mnist()
    if path is None and required:
        raise SystemExit("binarized MNIST not found (set PPL_VAE_BINARIZED_MNIST)")
    return path


def subset(ds, n_train=None, n_eval: int | None = None, name: str | None = None):
    """The first ``n_train`` training points (``None`` or ``"all"``: every one) and the first
    ``n_eval`` validation and test points of a :class:`ppl_vae.io.data.Dataset`."""
    from ppl_vae.io.data import Dataset

    n = None if n_train in (None, "all") else int(n_train)
    return Dataset(name or ds.name, ds.train[:n], ds.valid[:n_eval], ds.test[:n_eval],
                   ds.image_shape)


def npz_subset(source: Path, n_train: int, out_dir: Path, n_eval: int = 1000) -> Path:
    """A smaller copy of an ``.npz`` data set in ``out_dir`` (for commands that read a file)."""
    arrays = np.load(source)
    path = Path(out_dir) / f"{Path(source).stem}_{n_train}.npz"
    np.savez(path, train=arrays["train"][:n_train], valid=arrays["valid"][:n_eval],
             test=arrays["test"][:n_eval])
    return path


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------
def timed(fn) -> float:
    """Seconds one call of ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleave(runners: dict, repeats: int, warmup: bool = True) -> dict:
    """``{name: [seconds, ...]}``: each runner called once to warm up (in-process runs), then
    the runners in turn (A, B, A, B, ...) ``repeats`` times."""
    for fn in runners.values() if warmup else ():
        fn()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            times[name].append(timed(fn))
    return times


def spread(seconds) -> dict:
    """Median and min-max of a list of timings."""
    return {"seconds": float(np.median(seconds)), "seconds_min": float(min(seconds)),
            "seconds_max": float(max(seconds))}


def ratio_row(target: str, times: dict, ours: str, ref: str, per: float = 1.0,
              higher_is_better: bool = False, goal: float | None = None) -> dict:
    """Median and min-max of ours/ref (or ref/ours for throughputs), paired by repeat."""
    a, b = np.array(times[ours]), np.array(times[ref])
    r = (b / a) if higher_is_better else (a / b)
    row = {"target": target, "ours_median_s": float(np.median(a)) / per,
           "ref_median_s": float(np.median(b)) / per, "ratio": float(np.median(r)),
           "ratio_min": float(r.min()), "ratio_max": float(r.max()), "repeats": len(a),
           "kind": "throughput ratio (higher is better)" if higher_is_better
           else "time ratio (lower is better)", "goal": goal}
    if goal is not None:
        row["met"] = bool(row["ratio"] >= goal if higher_is_better else row["ratio"] <= goal)
    return row


def run_process(cmd, env) -> tuple[float, str]:
    """Seconds and stdout of a whole process."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------------------
# markdown
# ------------------------------------------------------------------------------------------
def markdown_table(frame, columns=None, headers=None, fmt=".2f") -> str:
    """A GitHub markdown table of ``frame``'s ``columns`` (default: all) under ``headers``
    (default: the column names). ``fmt``: a format spec for floats (NaN: an empty cell, as
    :func:`ppl_vae.io.reporting.markdown_table`, which writes the table) or a function
    ``(value, column) -> str`` for every cell."""
    import pandas as pd

    from ppl_vae.io.reporting import markdown_table as table

    columns = list(frame.columns if columns is None else columns)
    headers = list(columns if headers is None else headers)
    if callable(fmt):
        cells = [[fmt(v, c) for v in frame[c]] for c in columns]
        return table(pd.DataFrame(dict(enumerate(cells))).set_axis(headers, axis=1))
    return table(frame[columns].set_axis(headers, axis=1), fmt)


def missing(value) -> bool:
    """``None`` or a float NaN: an empty cell."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
