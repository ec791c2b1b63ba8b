"""``ppl-vae evaluate``: estimate the marginal likelihood log p(x) of a trained run.

Estimators: :data:`ppl_vae.marginal.ESTIMATORS` (``elbo``, ``naive``, ``is``, ``ais``), run by
:func:`ppl_vae.marginal.estimate_log_likelihood`.
Prints a summary (or, with ``--json``, exactly one JSON object on stdout; the progress bar and
warnings go to stderr) and appends one row to ``RUN/evaluation.csv``; ``--per-point FILE`` also
writes one row per data point. Point i's randomness comes from (``--seed``, i), so with
``--nproc N`` (or under torchrun) the points are split into contiguous shards, one per worker,
and rank 0 writes exactly what a single process writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

from ppl_vae.commands import options as tk

NAME = "evaluate"
HELP = ("estimate log p(x) of a trained run with the ELBO, naive Monte Carlo, importance sampling "
        "or AIS")

#: run from the command line, the process ends without the interpreter's teardown
#: (:func:`ppl_vae.commands.cli.exit_now`): everything is written and flushed by then
FAST_EXIT = True

CSV_NAME = "evaluation.csv"
CSV_COLUMNS = (
    "timestamp", "run", "split", "estimator", "num_samples", "n", "num_dims", "log_likelihood",
    "stderr", "mc_stderr", "bits_per_dim", "ess_mean", "ess_min", "pareto_k_max",
    "pareto_k_mean", "num_unreliable", "pareto_k_threshold", "log_weight_var_mean", "seconds",
    "seed", "limit", "device", "peak_rss_mb", "cuda_peak_mb",
    "num_steps", "num_leapfrog", "init", "schedule", "acceptance_rate", "step_size",
    "checkpoint", "epochs_done", "run_id", "checkpoint_id",
)
INTEGER_COLUMNS = ("num_samples", "n", "num_dims", "num_unreliable", "seed", "limit",
                   "num_steps", "num_leapfrog", "epochs_done")


def add_arguments(p):
    from ppl_vae.marginal import ESTIMATORS

    tk.add_run(p)
    p.add_argument("--estimator", required=True, choices=tuple(ESTIMATORS),
                   help="; ".join(f"{k}: {v}" for k, v in ESTIMATORS.items()))
    p.add_argument("--samples", "-k", type=int, required=True, metavar="K",
                   help="samples per data point (ais: number of chains)")
    p.add_argument("--evidence", action="store_true",
                   help="estimate the model evidence log p(X) of the whole split (all --limit "
                        "points together; for models with global latents), not log p(x) per "
                        "point")
    tk.add_split(p)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate only the first N points of the split")
    tk.add_json(p, "print exactly one JSON object on stdout (progress goes to stderr)")
    p.add_argument("--per-point", default=None, metavar="FILE",
                   help="also write a CSV with one row per data point (index in the split, "
                        "log_likelihood, stderr, ess, pareto_k, ...)")
    tk.add_seed(p)
    tk.add_device(p)
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="data points per chunk (default: sized to bound memory)")
    p.add_argument("--particle-chunk", type=int, default=None, metavar="K",
                   help="samples per chunk (default: sized to bound memory)")
    p.add_argument("--compile", dest="compile", action="store_const", const=True,
                   default="auto",
                   help="is, elbo, naive: record the log weights of a block once and run them "
                        "through torch.compile (the same random draws; default: when points x "
                        "K >= 5,000,000)")
    p.add_argument("--no-compile", dest="compile", action="store_const", const=False,
                   help="never compile the log weights")
    tk.add_ais(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from ppl_vae.training.distributed import add_arguments as add_distributed_arguments

    add_distributed_arguments(p)


def _check_args(args) -> None:
    from ppl_vae.errors import ConfigError

    if args.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {args.samples}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.estimator == "ais" and (args.anneal_steps < 1 or args.leapfrog < 1
                                    or not args.step_size > 0):
        raise ConfigError("--anneal-steps and --leapfrog must be >= 1 and --step-size > 0")
    for flag in ("batch_size", "particle_chunk"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {v}")
    if not Path(args.run).exists():
        raise ConfigError(f"--run {args.run}: no such run directory")


def _options(args) -> dict:
    from ppl_vae.training.distributed import is_main

    options = dict(batch_size=args.batch_size, particle_chunk=args.particle_chunk,
                   progress=not args.no_progress and is_main(), seed=args.seed)
    if args.estimator != "ais":
        options["compile"] = args.compile
    else:
        options.update(num_steps=args.anneal_steps, num_leapfrog=args.leapfrog,
                       step_size=args.step_size, init=args.init, schedule=args.schedule)
    return options


def write_per_point(result, path) -> None:
    """One CSV row per data point: its index in the split and every per-point value."""
    import pandas as pd
    import torch

    from ppl_vae.io.checkpoint import atomic_write_bytes
    from ppl_vae.io.provenance import csv_columns
    from ppl_vae.marginal.result import PER_POINT

    columns = {"index": range(result.n), **{k: getattr(result, k).numpy() for k in PER_POINT}}
    columns.update({k: v.double().numpy() for k, v in result.info.items()
                    if isinstance(v, torch.Tensor) and v.dim() == 1 and len(v) == result.n})
    frame = pd.DataFrame(columns)
    for key, value in csv_columns().items():  # which checkpoint the estimates describe
        frame[key] = value
    atomic_write_bytes(path, frame.to_csv(index=False).encode())


#: AIS gradient rows (points x chains x temperatures x leapfrog steps) above which evaluate warns
AIS_WARN_ROWS = 2_000_000


def _warn_cost(args, n: int) -> None:
    """One line on stderr before an AIS run whose work will take long."""
    if args.estimator != "ais":
        return
    rows = n * args.samples * args.anneal_steps * args.leapfrog
    if rows > AIS_WARN_ROWS:
        print(f"ppl-vae evaluate: warning: AIS will compute {rows:,} gradient rows ({n} points x "
              f"K={args.samples} chains x T={args.anneal_steps} temperatures x "
              f"{args.leapfrog} leapfrog steps); this can take many minutes; lower "
              "--anneal-steps or --limit for a quick look", file=sys.stderr)


def _estimate(r, x, args):
    """Per-point log p(x) sharded over the workers, or the evidence of all of ``x``."""
    from ppl_vae.errors import ConfigError
    from ppl_vae.marginal import model_evidence
    from ppl_vae.training import distributed

    _warn_cost(args, x.shape[0])
    if not args.evidence:
        return distributed.sharded_log_likelihood(
            r.model, r.guide, x, args.estimator, args.samples, align=args.batch_size or 1,
            **_options(args))
    if distributed.world_size() > 1:
        raise ConfigError("--evidence is one estimate of the whole split: run it in one "
                          "process (no --nproc / torchrun)")
    options = _options(args)
    options.pop("batch_size")
    return model_evidence(r.model, r.guide, x, args.samples, args.estimator, **options)


def _split(r, name: str, limit=None):
    """``r.split(name)[:limit]``, reading (and checking) only those points where the data set
    is an ``.npz`` of binary data (grey data are binarized as a whole split)."""
    from ppl_vae.io.data import as_evaluated, load_split

    if r._dataset is not None or not isinstance(r.config.data, str):
        return r.split(name)[:limit]
    spec, likelihood = r.config.likelihood_spec(), getattr(r.model, "likelihood", None)
    x = load_split(r.config.data, name, likelihood=spec, limit=limit)
    if limit is not None and getattr(likelihood, "binary", False) and not bool(
            ((x == 0) | (x == 1)).all()):
        x = load_split(r.config.data, name, likelihood=spec)
        return as_evaluated(x, name, likelihood)[:limit]
    return as_evaluated(x, name, likelihood)


def run(args) -> int:
    import torch

    from ppl_vae.io.memory import FreedMemoryTrimmer, keep_freed_memory
    from ppl_vae.io.reporting import (
        append_csv,
        check_same_run,
        json_safe,
        peak_rss_mb,
        resolve_device,
    )
    from ppl_vae.training import distributed
    from ppl_vae.training.runs import load_run

    _check_args(args)
    kept = keep_freed_memory()
    device = resolve_device(args.device)
    run_dir = Path(args.run)
    r = load_run(run_dir, map_location=str(device), checkpoint=args.checkpoint)
    from ppl_vae.io.provenance import declare

    declare(r.provenance())  # the per-point CSV names this checkpoint
    r.model.to(device), r.guide.to(device)
    check_same_run(run_dir / CSV_NAME, r.run_id)
    x = _split(r, args.split, args.limit)
    # the heap keeps freed blocks (kept); what fragments is handed back as the estimate runs
    with torch.no_grad(), (FreedMemoryTrimmer() if kept else contextlib.nullcontext()):
        result = _estimate(r, x.to(device), args)
    if not distributed.is_main():
        return 0
    if args.per_point:
        write_per_point(result, Path(args.per_point))
    summary = result.summary()
    row = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "run": str(run_dir),
           "split": args.split, **summary, "seed": args.seed, "limit": args.limit,
           "device": str(device), "peak_rss_mb": round(peak_rss_mb(), 1),
           "checkpoint": args.checkpoint, "epochs_done": int(r.checkpoint.get("epochs_done", 0)),
           "run_id": r.run_id, "checkpoint_id": r.checkpoint_id}
    if device.type == "cuda":
        row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if args.estimator != "ais":
        for key in ("num_steps", "num_leapfrog", "init", "schedule"):
            row.pop(key, None)
    append_csv(run_dir / CSV_NAME, row, CSV_COLUMNS, integers=INTEGER_COLUMNS)
    warning = None
    if summary["num_unreliable"]:
        warning = (f"warning: Pareto k-hat > {summary['pareto_k_threshold']} for "
                   f"{summary['num_unreliable']} of {summary['n']} points: their estimates are "
                   "unreliable (heavy-tailed weights; Vehtari et al., PSIS)")
    if args.json:
        if warning:
            print(warning, file=sys.stderr)
        print(json.dumps(json_safe(row), allow_nan=False))
        return 0
    _print_human(row, warning, run_dir / CSV_NAME)
    return 0


# what each estimator's number is: a bound is called a bound
WHAT = {
    "elbo": "ELBO (lower bound on log p(x)) =",
    "is": "IS bound L_K on log p(x) (a lower bound in expectation; tightens as K grows) =",
    "naive": "naive Monte Carlo estimate of log p(x) (a lower bound in expectation) =",
    "ais": "AIS estimate of log p(x) (a lower bound in expectation) =",
}


def _fmt(v, spec=".3f"):
    missing = v is None or (isinstance(v, float) and not math.isfinite(v))
    return "n/a" if missing else format(v, spec)


def _print_human(row: dict, warning, csv_path) -> None:
    print(f"run {row['run']}  split {row['split']}  n={row['n']}  D={row['num_dims']}  "
          f"checkpoint {row['checkpoint']} (epoch {row['epochs_done']})")
    extra = ""
    if row["estimator"] == "ais":
        extra = (f"  (T={row['num_steps']}, {row['num_leapfrog']} leapfrog, init {row['init']}, "
                 f"{row['schedule']} schedule, acceptance {_fmt(row['acceptance_rate'], '.2f')})")
    print(f"estimator {row['estimator']}  K={row['num_samples']}{extra}")
    if row["estimator"].endswith("-evidence"):
        print(f"model evidence log p(X) of all {row['limit'] or 'split'} points "
              f"({WHAT[row['estimator'].removesuffix('-evidence')]} for the data set) "
              f"{_fmt(row['log_likelihood'])} nats  (Monte Carlo stderr {_fmt(row['stderr'])})")
    else:
        print(f"{WHAT[row['estimator']]} {_fmt(row['log_likelihood'])} nats  (stderr over points "
              f"{_fmt(row['stderr'])}; Monte Carlo stderr {_fmt(row['mc_stderr'])})")
    print(f"bits/dim {_fmt(row['bits_per_dim'], '.4f')}")
    print(f"ESS mean {_fmt(row['ess_mean'], '.1f')}  min {_fmt(row['ess_min'], '.1f')}  "
          f"(of K={row['num_samples']})")
    print(f"Pareto k-hat max {_fmt(row['pareto_k_max'], '.2f')}  "
          f"unreliable (k-hat > {row['pareto_k_threshold']}): {row['num_unreliable']}")
    print(f"seconds {row['seconds']:.2f}  peak RSS {_fmt(row['peak_rss_mb'], '.0f')} MB")
    if row.get("compiled"):
        print(f"log weights compiled (torch.compile): {row['compile_seconds']:.1f} s to capture "
              "and compile, included in the seconds")
    elif row.get("compile_notice"):
        print(row["compile_notice"])
    if warning:
        print(warning)
    print(f"appended to {csv_path}")
