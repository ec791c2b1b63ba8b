"""1 vs 2 stochastic layers on binarized MNIST: test log-likelihood (IS) and active units.

The comparison of Burda et al. (2016, "Importance Weighted Autoencoders", table 1, VAE rows):
the same training budget for

* ``1-layer``: x(784) -200-200- z(50), tanh (VAEModel + DiagonalNormalGuide);
* ``2-layer``: x(784) -200-200- z1(100) -100-100- z2(50), tanh, bottom-up guide
  q(z1|x) q(z2|z1) (HierarchicalVAE + BottomUpGuide);
* ``2-layer-top-down`` (optional, ``--configs``): the same model with the ladder (top-down) guide
  of Sønderby et al. (2016);

Bernoulli likelihood, objective ``trace`` (the ELBO; ``--objective`` to change), Adam,
batch 100, optional KL warm-up (``--kl-warmup``, the same for every config). After training, on
the (statically binarized) test split: log p(x) by importance sampling with the guide as proposal
(``ppl_vae.marginal.importance_sampling``, K = ``--k`` samples per point, 5000 by default as in
Burda et al.), its standard error across test points, the ELBO (mean log weight), and the number
of active units per layer (Burda et al.'s criterion Cov_x(E_q[z_u|x]) > 0.01,
``ppl_vae.analysis.active_units``).

Usage (the full measurement; CPU, hours — see docs/hierarchical.md)::

    python benchmarks/hierarchical.py --data binarized-mnist --epochs 100 --kl-warmup 10 \\
        --k 5000 --out runs/hierarchical

Quick check on the embedded digits (seconds)::

    python benchmarks/hierarchical.py --data digits --epochs 2 --k 50 --out /tmp/hier

Writes ``OUT/results.csv`` and ``OUT/results.md`` (one row per config; ``--out`` defaults to
``$TMPDIR/ppl_vae_benchmarks/hierarchical``) and one run directory per
config (``OUT/<config>/``: checkpoint, metrics.csv, active_units.csv, ...). Runs whose checkpoint
already has the requested epochs are not retrained (``--retrain`` to force), so an interrupted
benchmark resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import torch
from _common import default_out, markdown_table, parser

import ppl_vae  # noqa: F401  (settings, registries)
from ppl_vae.analysis.active_units import active_units
from ppl_vae.errors import CheckpointError
from ppl_vae.io.data import load_dataset
from ppl_vae.marginal import importance_sampling
from ppl_vae.training.config import TrainConfig
from ppl_vae.training.loop import train
from ppl_vae.training.runs import load_run

CONFIGS = {
    "1-layer": dict(latent_dims=(50,), guide="bottom-up"),
    "2-layer": dict(latent_dims=(100, 50), guide="bottom-up"),
    "2-layer-top-down": dict(latent_dims=(100, 50), guide="top-down"),
}
COMMON = dict(hidden=(200, 200), activation="tanh", likelihood="bernoulli", batch_size=100,
              lr=1e-3)


def parse_args(argv=None):
    p = parser(__doc__, out=default_out("hierarchical"), seed=True)
    p.add_argument("--data", default="binarized-mnist")
    p.add_argument("--configs", default="1-layer,2-layer",
                   help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--kl-warmup", type=int, default=0, help="KL warm-up epochs (all configs)")
    p.add_argument("--objective", default="trace")
    p.add_argument("--weight-init", default="burda",
                   help="burda (default; Burda et al.'s initialisation) or torch (PyTorch's)")
    p.add_argument("--particles", type=int, default=1)
    p.add_argument("--k", type=int, default=5000, help="importance samples per test point")
    p.add_argument("--test-points", type=int, default=None,
                   help="evaluate on the first N test points only (default: all)")
    p.add_argument("--eval-batch", type=int, default=None,
                   help="data points per IS chunk (default: ppl_vae.marginal's choice)")
    p.add_argument("--au-samples", type=int, default=100,
                   help="Monte Carlo samples for E_q[z_l|x] of upper layers (active units)")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _trained(run_dir: Path, config: dict, dataset, args):
    """Train (or resume, or reuse) the run in ``run_dir``; returns (model, guide, metrics, s)."""
    progress = not args.no_progress
    if not args.retrain and (run_dir / "checkpoint.pt").is_file():
        try:
            run = load_run(run_dir, dataset=dataset, checkpoint="last")
        except CheckpointError:
            run = None
        wanted = TrainConfig.from_dict({**run.config.to_dict(), **config}) if run else None
        if run is not None and not run.config.differences(wanted):
            done = int(run.checkpoint.get("epochs_done", 0))
            metrics = pd.DataFrame(run.checkpoint.get("metrics", []))
            if done >= args.epochs:
                return run.model, run.guide, metrics
            res = train(out=run_dir, resume=True, dataset=dataset, progress=progress,
                        epochs=args.epochs)
            return res.model, res.guide, res.metrics
    res = train(config, out=run_dir, dataset=dataset, progress=progress, overwrite=True)
    return res.model, res.guide, res.metrics


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.data, likelihood="bernoulli")
    names = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; choose from {list(CONFIGS)}")

    rows = []
    for name in names:
        config = {**COMMON, **CONFIGS[name], "data": args.data, "epochs": args.epochs,
                  "kl_warmup_epochs": args.kl_warmup, "objective": args.objective,
                  "particles": args.particles, "seed": args.seed, "weight_init": args.weight_init}
        run_dir = out / name
        t0 = time.perf_counter()
        model, guide, metrics = _trained(run_dir, config, dataset, args)
        train_s = float(metrics["seconds"].sum()) if len(metrics) else time.perf_counter() - t0
        model.eval(), guide.eval()

        x = dataset.split_for("test", model.likelihood)
        if args.test_points:
            x = x[: args.test_points]
        torch.manual_seed(args.seed)
        t1 = time.perf_counter()
        res = importance_sampling(model, guide, x, num_samples=args.k,
                                  batch_size=args.eval_batch, progress=not args.no_progress)
        eval_s = time.perf_counter() - t1
        ll = res.log_likelihood.double()
        units = active_units(guide, x, num_samples=args.au_samples, seed=args.seed)
        units.to_frame().to_csv(run_dir / "active_units_test.csv", index=False)
        rows.append({
            "config": name,
            "latent_dims": "-".join(map(str, config["latent_dims"])),
            "guide": config["guide"],
            "epochs": int(metrics["epoch"].max()) if len(metrics) else args.epochs,
            "kl_warmup": args.kl_warmup,
            "objective": args.objective,
            "k": args.k,
            "test_points": int(x.shape[0]),
            "test_log_likelihood": float(ll.mean()),
            "test_ll_stderr": float(ll.std() / math.sqrt(ll.numel())),
            "test_elbo": float(res.log_weight_mean.double().mean()),
            "valid_elbo_last_epoch": float(metrics["valid_elbo"].iloc[-1]) if len(metrics)
            else float("nan"),
            "active_units": ", ".join(f"{k} {units.counts[k]}/{units.dims[k]}"
                                      for k in units.activity),
            "active_total": units.total,
            "train_seconds": train_s,
            "eval_seconds": eval_s,
        })
        print(json.dumps(rows[-1]))

    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    table = results_table(df, args.data)
    (out / "results.md").write_text(table)
    print(table)
    return 0


def results_table(df: pd.DataFrame, data: str) -> str:
    table = df.assign(
        ll=[f"{m:.2f} ± {s:.2f}" for m, s in zip(df.test_log_likelihood, df.test_ll_stderr)],
        elbo=[f"{v:.2f}" for v in df.test_elbo],
        train_min=[f"{v / 60:.1f}" for v in df.train_seconds])
    columns = {"config": "model", "latent_dims": "latent dims", "guide": "guide",
               "epochs": "epochs", "k": "K", "test_points": "test points", "ll": "test log p(x)",
               "elbo": "test ELBO", "active_units": "active units", "train_min": "train (min)"}
    return (f"Test split of {data}; log p(x) by importance sampling with the guide as proposal "
            "(nats per point; ± is the standard error over test points).\n\n"
            + markdown_table(table, list(columns), list(columns.values())))


if __name__ == "__main__":
    raise SystemExit(main())
