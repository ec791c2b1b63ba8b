"""``ppl-vae evaluate``: estimate the marginal likelihood log p(x) of a trained run.

Estimators (see :mod:`ppl_vae.marginal`): ``elbo`` (the mean of K log weights log p(x,z)/q(z|x),
z ~ q), ``naive`` (naive Monte Carlo from the prior), ``is`` (importance sampling with the guide,
the IWAE bound L_K), ``ais`` (annealed importance sampling with HMC; K = number of chains).
Prints a summary (or, with ``--json``, exactly one JSON object on stdout; the progress bar and
warnings go to stderr) and appends one row to ``RUN/evaluation.csv``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

NAME = "evaluate"
HELP = "estimate log p(x) of a trained run with the ELBO, naive Monte Carlo, importance sampling or AIS"

ESTIMATORS = ("elbo", "naive", "is", "ais")
CSV_NAME = "evaluation.csv"
CSV_COLUMNS = (
    "timestamp", "run", "split", "estimator", "num_samples", "n", "num_dims", "log_likelihood",
    "stderr", "mc_stderr", "bits_per_dim", "ess_mean", "ess_min", "pareto_k_max",
    "pareto_k_mean", "num_unreliable", "pareto_k_threshold", "log_weight_var_mean", "seconds",
    "seed", "limit", "device", "peak_rss_mb", "cuda_peak_mb",
    "num_steps", "num_leapfrog", "init", "schedule", "acceptance_rate", "step_size",
)


def add_arguments(p):
    p.add_argument("--run", required=True, help="run directory written by `ppl-vae train`")
    p.add_argument("--estimator", required=True, choices=ESTIMATORS,
                   help="elbo: mean log weight; naive: prior samples; is: importance sampling "
                        "with the guide (IWAE bound L_K); ais: annealed importance sampling")
    p.add_argument("--samples", "-k", type=int, required=True, metavar="K",
                   help="samples per data point (ais: number of chains)")
    p.add_argument("--split", default="test", help="data split: train, valid or test (default)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate only the first N points of the split")
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object on stdout (progress goes to stderr)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu (default) or cuda")
    p.add_argument("--batch-size", type=int, default=None,
                   help="data points per chunk (default: sized to bound memory)")
    p.add_argument("--particle-chunk", type=int, default=None,
                   help="samples per chunk (default: sized to bound memory)")
    g = p.add_argument_group("AIS options")
    g.add_argument("--steps", type=int, default=1000, help="annealing steps T (default 1000)")
    g.add_argument("--leapfrog", type=int, default=10,
                   help="leapfrog steps per HMC transition (default 10)")
    g.add_argument("--step-size", type=float, default=0.05,
                   help="initial HMC step size, adapted towards 65%% acceptance (default 0.05)")
    g.add_argument("--init", choices=("guide", "prior"), default="guide",
                   help="initial distribution of the chains (default guide)")
    g.add_argument("--schedule", choices=("sigmoid", "geometric", "linear"), default="sigmoid",
                   help="spacing of the temperatures beta (default sigmoid, Wu et al. 2017)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_run(run_dir, device: str):
    """The trained run (:func:`ppl_vae.runs.load_run`), moved to ``device``."""
    from ppl_vae.runs import load_run

    run = load_run(run_dir, map_location=device)
    run.model.to(device)
    run.guide.to(device)
    return run


def _device(name: str):
    import torch

    from ppl_vae.errors import ConfigError

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"--device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    return device


def _peak_rss_mb() -> float:
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20
    except (ImportError, OSError):  # pragma: no cover - non-POSIX
        return math.nan


def estimate(model, guide, x, estimator: str, samples: int, *, batch_size=None,
             particle_chunk=None, steps=1000, leapfrog=10, step_size=0.05, init="guide",
             schedule="sigmoid", progress=False):
    """Run one estimator on ``x``; returns a :class:`~ppl_vae.marginal.MarginalLikelihoodResult`.

    ``elbo`` is importance sampling with K samples reported as the mean log weight (the K-sample
    Monte Carlo estimate of the ELBO), with per-point standard error sd(log w) / sqrt(K).
    """
    from dataclasses import replace

    from ppl_vae import marginal
    from ppl_vae.errors import ConfigError

    chunks = dict(batch_size=batch_size, particle_chunk=particle_chunk, progress=progress)
    if estimator == "naive":
        return marginal.naive_monte_carlo(model, x, samples, **chunks)
    if estimator in ("is", "elbo"):
        result = marginal.importance_sampling(model, guide, x, samples, **chunks)
        if estimator == "is":
            return result
        return replace(result, estimator="elbo", log_likelihood=result.log_weight_mean,
                       stderr=(result.log_weight_var / samples).sqrt())
    if estimator == "ais":
        return marginal.annealed_importance_sampling(
            model, guide, x, samples, steps, init=init, schedule=schedule,
            num_leapfrog=leapfrog, step_size=step_size, **chunks)
    raise ConfigError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")


def _clean(value):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _clean(value.item())
    return value


def append_csv(path: Path, row: dict) -> None:
    """Append ``row`` to the CSV at ``path`` (pandas; columns are the union of old and new)."""
    import pandas as pd

    from ppl_vae.checkpoint import atomic_write_bytes

    new = pd.DataFrame([row])
    if path.exists() and path.stat().st_size > 0:
        old = pd.read_csv(path)
        df = pd.concat([old, new], ignore_index=True)
    else:
        df = new
    cols = [c for c in CSV_COLUMNS if c in df.columns] + [c for c in df.columns if c not in CSV_COLUMNS]
    atomic_write_bytes(path, df[cols].to_csv(index=False).encode())


def run(args) -> int:
    import pyro
    import torch

    from ppl_vae.errors import ConfigError

    if args.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {args.samples}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.estimator == "ais" and (args.steps < 1 or args.leapfrog < 1 or not args.step_size > 0):
        raise ConfigError("--steps and --leapfrog must be >= 1 and --step-size > 0")
    for flag in ("batch_size", "particle_chunk"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {v}")
    run_dir = Path(args.run)
    if not run_dir.exists():
        raise ConfigError(f"run directory {run_dir} does not exist")
    device = _device(args.device)

    r = _load_run(run_dir, str(device))
    x = r.split(args.split)
    if args.limit is not None:
        x = x[: args.limit]
    x = x.to(device)
    pyro.set_rng_seed(args.seed)
    with torch.no_grad():
        result = estimate(
            r.model, r.guide, x, args.estimator, args.samples, batch_size=args.batch_size,
            particle_chunk=args.particle_chunk, steps=args.steps, leapfrog=args.leapfrog,
            step_size=args.step_size, init=args.init, schedule=args.schedule,
            progress=not args.no_progress)

    summary = result.summary()
    row = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "run": str(run_dir),
        "split": args.split,
        **summary,
        "seed": args.seed,
        "limit": args.limit,
        "device": str(device),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    if device.type == "cuda":
        row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if args.estimator != "ais":
        for key in ("num_steps", "num_leapfrog", "init", "schedule"):
            row.pop(key, None)
    append_csv(run_dir / CSV_NAME, row)

    warning = None
    if summary["num_unreliable"]:
        warning = (f"warning: Pareto k-hat > {summary['pareto_k_threshold']} for "
                   f"{summary['num_unreliable']} of {summary['n']} points: their estimates are "
                   "unreliable (heavy-tailed weights; Vehtari et al., PSIS)")
    if args.json:
        if warning:
            print(warning, file=sys.stderr)
        print(json.dumps({k: _clean(v) for k, v in row.items()}))
        return 0
    _print_human(row, warning, run_dir / CSV_NAME)
    return 0


def _fmt(v, spec=".3f"):
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _print_human(row: dict, warning, csv_path) -> None:
    print(f"run {row['run']}  split {row['split']}  n={row['n']}  D={row['num_dims']}")
    extra = ""
    if row["estimator"] == "ais":
        extra = (f"  (T={row['num_steps']}, {row['num_leapfrog']} leapfrog, init {row['init']}, "
                 f"{row['schedule']} schedule, acceptance {_fmt(row['acceptance_rate'], '.2f')})")
    print(f"estimator {row['estimator']}  K={row['num_samples']}{extra}")
    print(f"log p(x) ~ {_fmt(row['log_likelihood'])} nats  (stderr over points "
          f"{_fmt(row['stderr'])}; Monte Carlo stderr {_fmt(row['mc_stderr'])})")
    print(f"bits/dim {_fmt(row['bits_per_dim'], '.4f')}")
    print(f"ESS mean {_fmt(row['ess_mean'], '.1f')}  min {_fmt(row['ess_min'], '.1f')}  "
          f"(of K={row['num_samples']})")
    print(f"Pareto k-hat max {_fmt(row['pareto_k_max'], '.2f')}  "
          f"unreliable (k-hat > {row['pareto_k_threshold']}): {row['num_unreliable']}")
    print(f"seconds {row['seconds']:.2f}  peak RSS {_fmt(row['peak_rss_mb'], '.0f')} MB")
    if warning:
        print(warning)
    print(f"appended to {csv_path}")
