"""ppl_vae against its peers: the same VAE trained by each library's own trainer, timed whole.

One model everywhere: encoder 784-500-500-2x50, decoder 50-500-500-784, ReLU, Bernoulli
likelihood, N(0, I) prior, batch 100, Adam lr 1e-3, ``--epochs`` epochs of statically binarized
MNIST (50000 training points), one validation ELBO (10000 points) per epoch. The rows (names
for ``--only``):

* ``ppl_vae``: ``ppl-vae train ... --objective trace`` (``--no-compile`` when the command has
  that flag), per-epoch seconds and ELBOs from its ``metrics.csv``; the baseline of the ratios.
* ``ppl_vae-compiled``: the same with ``--compile``, when ``ppl-vae train --help`` lists it.
* ``pyro-jit``, ``pyro``: ``pyro.infer.SVI`` with ``JitTrace_ELBO`` / ``Trace_ELBO``
  (``run_pyro.py``).
* ``torch``: the hand-written eager torch reference, ``benchmarks/references.py``.
* ``numpyro``: NumPyro SVI + ``Trace_ELBO``, a jit-compiled epoch (``run_numpyro.py``).
* ``pythae``: pythae's ``TrainingPipeline`` with the same networks (``run_pythae.py``).
* ``ppl_vae-compiled-mkl``, ``ppl_vae-compiled-onednn`` (only with ``--only``): the compiled
  row with ``PPL_VAE_ONEDNN=0`` / ``1`` (the compiled step's float32 products on MKL or
  oneDNN, :data:`ppl_vae.infer.compiled.ONEDNN_PRODUCTS`).

NumPyro (with JAX) and pythae are installed into this benchmark's own virtual environment
(``--venv``, default ``OUT/venv``; reused when it is there), created with
``--system-site-packages`` so that pythae runs on the same torch build as the other torch rows
and pip adds only what is missing; nothing is installed into the project's environment. A row
that cannot be installed or fails is reported as unavailable with the reason.

Each row is a whole process, run once per round, the rows interleaved (the order rotated each
round). Reported per row: whole-process wall time, the per-epoch seconds (training +
validation; the median of epochs 2..N of a run, so one-time costs such as JIT compilation
stay out) and the last epoch's validation ELBO, each as the median and min-max over the
rounds, with ratios to ``ppl_vae`` paired by round. ``--threads N`` sets OMP_NUM_THREADS and
MKL_NUM_THREADS in every process, and for N = 1 also
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` for JAX.

    python benchmarks/peers/peers.py [--rounds 2] [--epochs 3] [--threads N] [--only a,b]
    python benchmarks/peers/peers.py --smoke    # 1000 points, 1 epoch, rows without the venv

Writes ``peers.json``, ``peers.csv``, ``peers.md`` (the table), the venv and scratch run folders
under ``--out`` (default ``$TMPDIR/ppl_vae_benchmarks/peers``), nothing else.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
import _common  # noqa: E402
from _runner import versions  # noqa: E402

VENV_SETS = {"numpyro": (["numpyro", "jax"], "import numpyro, jax"),
             "pythae": (["pythae"], "import pythae")}
ONE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
BASELINE = "ppl_vae"


@dataclass
class Row:
    key: str
    label: str
    argv: list  # the command after the interpreter; DATA, EPOCHS, WORK are filled in per run
    venv: str | None = None  # the VENV_SETS entry the row needs
    metrics_csv: bool = False  # ppl_vae: read WORK/metrics.csv, not stdout
    unavailable: str | None = None
    env: dict | None = None  # added to the process's environment
    opt_in: bool = False  # only with --only


# ------------------------------------------------------------------------------------------
# the rows
# ------------------------------------------------------------------------------------------
def train_flags() -> str:
    """``ppl-vae train --help`` of the ppl_vae this interpreter imports."""
    return subprocess.run([sys.executable, "-m", "ppl_vae.commands.cli", "train", "--help"],
                          capture_output=True, text=True, check=True).stdout


def ppl_vae_argv(*extra) -> list:
    return ["-m", "ppl_vae.commands.cli", "train", "--data", "DATA", "--latent-dim", "50",
            "--hidden", "500,500", "--likelihood", "bernoulli", "--objective", "trace",
            "--batch-size", "100", "--lr", "1e-3", "--epochs", "EPOCHS", "--no-progress",
            "--out", "WORK", *extra]


def all_rows() -> list[Row]:
    flags = train_flags()
    has = {f: re.search(rf"(?<![\w-]){f}(?![\w-])", flags) is not None
           for f in ("--compile", "--no-compile")}
    runner = ["--data", "DATA", "--epochs", "EPOCHS"]
    compiled = Row("ppl_vae-compiled", "ppl_vae compiled", ppl_vae_argv("--compile"),
                   metrics_csv=True)
    if not has["--compile"]:
        compiled.unavailable = "pending: ppl-vae train has no --compile flag yet"
    products = [Row(f"ppl_vae-compiled-{name}", f"ppl_vae compiled, PPL_VAE_ONEDNN={value}",
                    compiled.argv, metrics_csv=True, unavailable=compiled.unavailable,
                    env={"PPL_VAE_ONEDNN": value}, opt_in=True)
                for name, value in (("mkl", "0"), ("onednn", "1"))]
    return [
        Row(BASELINE, "ppl_vae eager" if has["--no-compile"] else "ppl_vae",
            ppl_vae_argv(*(["--no-compile"] if has["--no-compile"] else [])), metrics_csv=True),
        compiled,
        Row("pyro-jit", "Pyro SVI + JitTrace_ELBO",
            [str(HERE / "run_pyro.py"), "--elbo", "jit", *runner]),
        Row("pyro", "Pyro SVI + Trace_ELBO", [str(HERE / "run_pyro.py"), "--elbo", "trace",
                                              *runner]),
        Row("torch", "hand-written torch (references.py)",
            [str(HERE.parent / "references.py"), "--objective", "trace", *runner]),
        Row("numpyro", "NumPyro SVI + Trace_ELBO, jit epoch", [str(HERE / "run_numpyro.py"),
                                                               *runner], venv="numpyro"),
        Row("pythae", "pythae TrainingPipeline (VAE)",
            [str(HERE / "run_pythae.py"), *runner, "--workdir", "WORK"], venv="pythae"),
        *products,
    ]


def select(rows: list[Row], only: str | None, smoke: bool) -> list[Row]:
    keys = [r.key for r in rows]
    wanted = [r.key for r in rows if not r.opt_in] if not only else only.split(",")
    unknown = sorted(set(wanted) - set(keys))
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; the rows are {keys}")
    if smoke and not only:
        wanted = [r.key for r in rows
                  if r.venv is None and not r.key.startswith("ppl_vae-compiled")]
    return [r for r in rows if r.key in wanted]


# ------------------------------------------------------------------------------------------
# the venv
# ------------------------------------------------------------------------------------------
def _importable(python: Path, statement: str) -> bool:
    return python.exists() and subprocess.run(
        [str(python), "-c", statement], capture_output=True).returncode == 0


def ensure_venv(venv: Path, needed: set, log: Path) -> dict:
    """``{set name: None if importable in the venv, else the reason}``, installing what is
    missing with the venv's pip (output appended to ``log``)."""
    python = venv / "bin" / "python"
    reasons = {}
    with open(log, "a") as out:
        if needed and not python.exists():
            made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                                   str(venv)], stdout=out, stderr=subprocess.STDOUT)
            if made.returncode:
                return {name: f"python -m venv failed (see {log})" for name in needed}
        for name in sorted(needed):
            packages, statement = VENV_SETS[name]
            if not _importable(python, statement):
                print(f"installing {' '.join(packages)} into {venv}", file=sys.stderr)
                subprocess.run([str(python), "-m", "pip", "install", *packages], stdout=out,
                               stderr=subprocess.STDOUT)
            reasons[name] = None if _importable(python, statement) else (
                f"pip install {' '.join(packages)} failed in {venv} (see {log})")
    return reasons


# ------------------------------------------------------------------------------------------
# one run
# ------------------------------------------------------------------------------------------
def thread_env(threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        if threads == 1:
            env["XLA_FLAGS"] = ONE_THREAD_XLA
    return env


def _lines(stdout: str) -> tuple[list, dict]:
    """The epoch records and the meta record of a runner's stdout."""
    epochs, meta = [], {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if "epoch" in record:
                epochs.append(record)
            meta.update(record.get("meta", {}))
    return epochs, meta


def _metrics_csv(path: Path) -> list:
    with open(path) as f:
        return [{"epoch": int(float(r["epoch"])), "seconds": float(r["seconds"]),
                 "valid_elbo": float(r["valid_elbo"])} for r in csv.DictReader(f)]


def run_once(row: Row, python: str, data: Path, epochs: int, work: Path, env: dict) -> dict:
    """One whole process of ``row``: wall seconds, epoch records, meta, or the error."""
    fill = {"DATA": str(data), "EPOCHS": str(epochs), "WORK": str(work)}
    cmd = [python, *(fill.get(a, a) for a in row.argv)]
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**env, **(row.env or {})}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    record = {"row": row.key, "wall_s": wall, "rc": proc.returncode, "command": cmd}
    if proc.returncode == 0:
        record["epochs"], record["meta"] = _lines(proc.stdout)
        if row.metrics_csv:
            found = (work / "metrics.csv").is_file()
            record["epochs"] = _metrics_csv(work / "metrics.csv") if found else []
    if proc.returncode or len(record.get("epochs", ())) != epochs:
        record["error"] = (proc.stderr or proc.stdout)[-2000:]
    shutil.rmtree(work, ignore_errors=True)
    return record


def run_rounds(rows: list[Row], pythons: dict, data: Path, epochs: int, rounds: int,
               work: Path, env: dict) -> list[dict]:
    """Every row once per round, interleaved, the order rotated by one row each round."""
    runs = []
    for r in range(rounds):
        k = r % max(1, len(rows))
        for row in rows[k:] + rows[:k]:
            record = run_once(row, pythons[row.key], data, epochs, work / row.key, env)
            record["round"] = r + 1
            status = "failed" if "error" in record else "ok"
            print(f"round {r + 1}/{rounds} {row.key}: {record['wall_s']:.1f} s {status}",
                  file=sys.stderr, flush=True)
            runs.append(record)
    return runs


# ------------------------------------------------------------------------------------------
# the summary
# ------------------------------------------------------------------------------------------
def per_round(runs: list[dict], key: str) -> dict:
    """``{round: {wall, epoch, epoch1, elbo}}`` of the successful runs of row ``key``."""
    out = {}
    for run in runs:
        if run["row"] == key and "error" not in run:
            seconds = [e["seconds"] for e in run["epochs"]]
            out[run["round"]] = {"wall": run["wall_s"], "epoch": float(np.median(seconds[1:]
                                                                                 or seconds)),
                                 "epoch1": seconds[0], "elbo": run["epochs"][-1]["valid_elbo"]}
    return out


def _spread(values, name: str) -> dict:
    if not values:
        return {name: None, f"{name}_min": None, f"{name}_max": None}
    return {name: float(np.median(values)), f"{name}_min": float(min(values)),
            f"{name}_max": float(max(values))}


def summarize(row: Row, runs: list[dict]) -> dict:
    mine, base = per_round(runs, row.key), per_round(runs, BASELINE)
    errors = [r["error"] for r in runs if r["row"] == row.key and "error" in r]
    last = (errors[0].strip().splitlines() or ["no output"])[-1] if errors else ""
    status = row.unavailable or (f"failed in {len(errors)} run(s): {last}" if errors else "ok")
    out = {"row": row.key, "label": row.label, "status": status, "rounds_ok": len(mine)}
    for stat in ("wall", "epoch", "epoch1", "elbo"):
        out.update(_spread([m[stat] for m in mine.values()], stat))
    for stat in ("wall", "epoch"):
        out.update(_spread([mine[r][stat] / base[r][stat] for r in mine if r in base],
                           f"{stat}_ratio"))
    meta = next((r.get("meta") for r in runs if r["row"] == row.key and r.get("meta")), {})
    out["versions"] = meta.get("versions") or driver_versions(row.key)
    return out


def driver_versions(key: str) -> dict:
    """Versions of the packages the project's interpreter runs (ppl_vae rows, the reference)."""
    names = ("ppl-vae", "torch", "pyro-ppl") if key.startswith("ppl_vae") else ("torch",)
    return versions(*names)


def _cell(d: dict, stat: str, fmt: str, suffix: str = "") -> str:
    if d.get(stat) is None:
        return ""
    lo, hi = format(d[f"{stat}_min"], fmt), format(d[f"{stat}_max"], fmt)
    dash = " – " if lo.startswith("-") else "–"
    return f"{format(d[stat], fmt)}{suffix} ({lo}{dash}{hi})"


def table(summary: list[dict]) -> str:
    import pandas as pd

    cells = [{"row": s["label"],
              "versions": ", ".join(f"{k} {v}" for k, v in s["versions"].items() if v),
              "whole process [s]": _cell(s, "wall", ".1f"),
              "× ppl_vae": _cell(s, "wall_ratio", ".2f", "×"),
              "per epoch, epochs 2..N [s]": _cell(s, "epoch", ".2f"),
              "× ppl_vae ": _cell(s, "epoch_ratio", ".2f", "×"),
              "epoch 1 [s]": _cell(s, "epoch1", ".2f"),
              "valid ELBO, last epoch": _cell(s, "elbo", ".2f"),
              "status": s["status"]} for s in summary]
    return _common.markdown_table(pd.DataFrame(cells))


# ------------------------------------------------------------------------------------------
def find_data(path: Path | None) -> Path:
    if path is not None:
        return path
    found = _common.mnist_path(required=False)
    beside = _common.ROOT.parent / "shared" / "data" / "binarized_mnist.npz"
    if found is None and not beside.is_file():
        raise SystemExit("binarized MNIST not found (set PPL_VAE_BINARIZED_MNIST or --data)")
    return found or beside


def git_commit() -> str | None:
    proc = subprocess.run(["git", "-C", str(_common.ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True)
    return proc.stdout.strip() or None


def write_results(out: Path, meta: dict, summary: list[dict], runs: list[dict]) -> str:
    (out / "peers.json").write_text(json.dumps({"meta": meta, "rows": summary, "runs": runs},
                                               indent=1))
    columns = [k for k in summary[0] if k != "versions"] + ["versions"]
    with open(out / "peers.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({**s, "versions": json.dumps(s["versions"])} for s in summary)
    text = table(summary)
    (out / "peers.md").write_text(f"`{meta['command']}`\n\n{text}")
    return text


def main(argv=None) -> int:
    p = _common.parser(__doc__, out=_common.default_out("peers"), threads=True,
                       smoke="1000 training points, 1 epoch, 1 round, only the rows without "
                             "the venv: seconds")
    p.add_argument("--rounds", type=int, default=None, help="default 2 (smoke: 1)")
    p.add_argument("--epochs", type=int, default=None, help="default 3 (smoke: 1)")
    p.add_argument("--only", default=None, help="comma-separated rows (default: all)")
    p.add_argument("--venv", type=Path, default=None, help="the venv (default OUT/venv)")
    p.add_argument("--data", type=Path, default=None, help="binarized-MNIST .npz")
    args = p.parse_args(argv)
    epochs = args.epochs or (1 if args.smoke else 3)
    rounds = args.rounds or (1 if args.smoke else 2)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = find_data(args.data)
    if args.smoke:
        data = _common.npz_subset(data, 1000, out, n_eval=1000)
    rows = select(all_rows(), args.only, args.smoke)
    venv = (args.venv or out / "venv").resolve()
    needed = {r.venv for r in rows if r.venv and not r.unavailable}
    reasons = ensure_venv(venv, needed, out / "venv-install.log") if needed else {}
    for row in rows:
        row.unavailable = row.unavailable or reasons.get(row.venv)
    pythons = {r.key: str(venv / "bin" / "python") if r.venv else sys.executable for r in rows}
    env = thread_env(args.threads)
    runs = run_rounds([r for r in rows if not r.unavailable], pythons, data, epochs, rounds,
                      out / "work", env)
    shutil.rmtree(out / "work", ignore_errors=True)
    summary = [summarize(r, runs) for r in rows]
    with np.load(data) as f:
        sizes = {k: int(f[k].shape[0]) for k in ("train", "valid")}
    meta = {"command": _common.command_line("peers/peers", argv if argv is not None
                                            else sys.argv[1:]),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "threads": args.threads or "default", "cpu_count": os.cpu_count(),
            "thread_env": {k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                "XLA_FLAGS") if k in env},
            "epochs": epochs, "rounds": rounds, "smoke": args.smoke, "data": str(data),
            **sizes, "python": sys.version.split()[0], "venv": str(venv),
            "ppl_vae_commit": git_commit()}
    print(write_results(out, meta, summary, runs))
    print(json.dumps(meta))
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
