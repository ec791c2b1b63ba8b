"""Gradient-estimator benchmark: variance, SNR, bias and convergence on digits and binarized MNIST.

For each data set and each model family:

* ``vae`` (Gaussian latents, Bernoulli decoder; every estimator applies): reparam, analytic-kl,
  score, score-avg, score-nn, iwae-5, rws-5, stl, dreg-5;
* ``sbn`` (sigmoid belief network, Bernoulli latents; no reparameterization): score,
  score-avg, score-nn, rws-5;

the script

1. builds one model/guide pair (seed ``--seed``) — the *common initial weights*;
2. **checkpoint statistics**: trains a copy for ``--pretrain-steps`` with a reference estimator
   (``reparam`` for the VAE, ``score-nn`` for the SBN) and, at those fixed parameters, draws G =
   ``--draws`` gradient estimates per estimator on one fixed minibatch
   (:func:`ppl_vae.analysis.gradient_variance.gradient_statistics`): total / encoder / decoder
   variance, median
   SNR, cosine to the reparam (or, for the SBN, score-avg) mean gradient, seconds per gradient;
3. **convergence**: trains one copy per estimator from the common initial weights, same seed,
   same minibatch sequence, ``--steps`` steps (:func:`ppl_vae.analysis.estimator_comparison.
   compare_estimators`): ELBO on the evaluation set vs steps and vs seconds, final IS
   log-likelihood with K = ``--is-samples``.

Writes under ``--out`` (default ``$TMPDIR/ppl_vae_benchmarks/gradient_estimators``), per
``<data>-<model>/``: ``checkpoint_gradients.csv``, ``results.csv`` (tidy convergence table),
``summary.csv``, ``variance.png``, ``elbo_vs_steps.png``, ``elbo_vs_seconds.png``; and at the top
``results.csv`` (all checkpoint statistics and summaries, with data/model columns) and
``RESULTS.md`` (the markdown tables with the command that produced them).

Usage::

    python benchmarks/gradient_estimators.py                       # digits + binarized MNIST
    python benchmarks/gradient_estimators.py --datasets digits --quick   # a smoke run (a few
    minutes)

Binarized MNIST is found as ``ppl_vae.io.data`` finds it (``$PPL_VAE_BINARIZED_MNIST``, then
``../shared/data/binarized_mnist.npz``; ``--mnist PATH`` to override). Timings are only
comparable within one run on an otherwise idle machine.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

import pandas as pd
import pyro
import torch
from _common import command_line, default_out, markdown_table, missing, mnist_path, parser

import ppl_vae
from ppl_vae.analysis.estimator_comparison import (
    build_pair,
    compare_estimators,
    plot_comparison,
    summary_table,
)
from ppl_vae.analysis.gradient_variance import gradient_statistics, statistics_frame
from ppl_vae.infer.objectives import comparison_objectives, objective_spec
from ppl_vae.io.data import binary_splits

# From the registry: every objective of the default comparison that applies to the family.
ESTIMATORS = {
    "vae": comparison_objectives(5),
    "sbn": [n for n in comparison_objectives(5) if objective_spec(n).can_infer_discrete],
}
REFERENCE = {"vae": "trace", "sbn": "score-nn"}

# Per data set: architecture and budget (overridable from the command line).
SETTINGS = {
    "digits": dict(latent={"vae": 10, "sbn": 32}, hidden=(200,), batch_size=64, steps=3000,
                   pretrain_steps=2000, eval_size=0, eval_split="valid"),
    "binarized-mnist": dict(latent={"vae": 50, "sbn": 200}, hidden=(200,), batch_size=100,
                            steps=10000, pretrain_steps=10000, eval_size=2000,
                            eval_split="valid"),
}
QUICK = dict(steps=150, pretrain_steps=100, draws=20, is_samples=20, eval_size=300, warmup=50)


def pretrain(model, guide, train_x, estimator, steps, batch_size, lr, seed):
    """A copy of (model, guide) trained for ``steps`` SVI steps: the checkpoint."""
    model, guide = copy.deepcopy(model), copy.deepcopy(guide)
    pyro.set_rng_seed(seed)
    svi = ppl_vae.SVI(model, guide, ppl_vae.make_objective(estimator, x_dim=train_x.shape[1]),
                      lr=lr)
    gen = torch.Generator().manual_seed(seed + 17)
    n = train_x.shape[0]
    for _ in range(int(steps)):
        idx = torch.randperm(n, generator=gen)[:batch_size]
        loss = svi.step(train_x[idx], num_data=n)
        if not math.isfinite(loss):
            raise FloatingPointError(f"pre-training with {estimator} diverged")
    return model, guide


def run_one(data, family, args, settings, out_root):
    out = out_root / f"{data}-{family}"
    out.mkdir(parents=True, exist_ok=True)
    spec = str(args.mnist) if data == "binarized-mnist" else data
    train_x, eval_x, _ = binary_splits(spec, settings["eval_split"], settings["eval_size"])
    latent = settings["latent"][family]
    estimators = ESTIMATORS[family]
    print(f"== {data} / {family}: latent {latent}, hidden {settings['hidden']}, "
          f"batch {settings['batch_size']}, {settings['steps']} steps", flush=True)

    pyro.set_rng_seed(args.seed)
    model0, guide0 = build_pair(family, train_x.shape[1], latent, settings["hidden"])

    t0 = time.perf_counter()
    model_c, guide_c = pretrain(model0, guide0, train_x, REFERENCE[family],
                                settings["pretrain_steps"], settings["batch_size"], args.lr,
                                args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    batch = train_x[torch.randperm(train_x.shape[0], generator=gen)[: settings["batch_size"]]]
    stats = gradient_statistics(model_c, guide_c, batch, estimators, draws=args.draws,
                                num_data=train_x.shape[0], seed=args.seed,
                                warmup=args.warmup, warmup_data=train_x)
    checkpoint = statistics_frame(stats)
    checkpoint.to_csv(out / "checkpoint_gradients.csv", index=False)
    print(f"   checkpoint statistics in {time.perf_counter() - t0:.0f}s", flush=True)

    result = compare_estimators(
        train_x, eval_x, estimators, model_family=family, steps=settings["steps"],
        batch_size=settings["batch_size"], lr=args.lr, seed=args.seed, is_samples=args.is_samples,
        draws=args.draws, warmup=args.warmup, pair=(model0, guide0), progress=not args.no_progress,
    )
    result.tidy.to_csv(out / "results.csv", index=False)
    result.summary.to_csv(out / "summary.csv", index=False)
    plot_comparison(result, out, title=f"{data}, {family}")
    return checkpoint, result.summary


def checkpoint_table(frame: pd.DataFrame) -> str:
    cols = ["objective", "total_variance", "variance_encoder", "variance_decoder", "snr_median",
            "cosine_to_reference", "target", "bias_z_max", "bias_z_threshold", "bias_detected",
            "seconds_per_gradient"]
    cols = [c for c in cols if c in frame.columns]

    def fmt(v, _column):
        if missing(v):
            return "n/a"
        return format(v, ".4g") if isinstance(v, float) else str(v)

    return markdown_table(frame, cols, fmt=fmt)


def main(argv=None) -> int:
    p = parser(__doc__, out=default_out("gradient_estimators"), seed=True,
               smoke="tiny budget: a smoke run")
    p.add_argument("--datasets", default="digits,binarized-mnist")
    p.add_argument("--models", default="vae,sbn")
    p.add_argument("--mnist", type=Path, default=None,
                   help="binarized-MNIST .npz (default: found as ppl_vae.io.data finds it)")
    p.add_argument("--steps", type=int, default=None, help="override the per-data-set budget")
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--draws", type=int, default=None, help="G gradient draws (default 100)")
    p.add_argument("--warmup", type=int, default=None, help="baseline warm-up draws (300)")
    p.add_argument("--is-samples", type=int, default=None,
                   help="K for the IS log-likelihood (default 500)")
    p.add_argument("--eval-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.quick = args.smoke
    args.mnist = args.mnist or mnist_path(required=False)
    defaults = QUICK if args.quick else dict(draws=100, is_samples=500, warmup=None)
    for key in ("draws", "is_samples", "warmup"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    args.out.mkdir(parents=True, exist_ok=True)
    command = command_line("gradient_estimators", sys.argv[1:] if argv is None else argv)

    md = [f"# Gradient-estimator benchmark\n\nCommand: `{command.strip()}`\n\n"
          f"ppl_vae {ppl_vae.__version__}, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, {torch.get_num_threads()} threads.\n"]
    all_rows = []
    for data in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if data not in SETTINGS:
            p.error(f"unknown data set {data!r}; choose from {sorted(SETTINGS)}")
        if data == "binarized-mnist" and not (args.mnist and args.mnist.is_file()):
            print(f"skipping binarized-mnist: {args.mnist} not found", file=sys.stderr)
            continue
        settings = copy.deepcopy(SETTINGS[data])
        for key in ("steps", "pretrain_steps", "eval_size"):
            value = getattr(args, key)
            if args.quick and value is None:
                value = QUICK[key]
            if value is not None:
                settings[key] = value
        for family in [m.strip() for m in args.models.split(",") if m.strip()]:
            checkpoint, summary = run_one(data, family, args, settings, args.out)
            for frame, kind in ((checkpoint, "checkpoint"), (summary, "convergence")):
                all_rows.append(frame.assign(data=data, model=family, table=kind))
            md.append(
                f"\n## {data}, {family} (latent {settings['latent'][family]}, hidden "
                f"{list(settings['hidden'])}, batch {settings['batch_size']})\n\n"
                f"Gradient statistics at a checkpoint ({settings['pretrain_steps']} steps of "
                f"`{REFERENCE[family]}`), G = {args.draws} draws on one minibatch, gradient of "
                "the minibatch estimate of the full-data objective:\n\n"
                + checkpoint_table(checkpoint)
                + f"\nConvergence from common initial weights, {settings['steps']} steps, "
                f"final IS log-likelihood with K = {args.is_samples} (evaluation split "
                f"`{settings['eval_split']}`, {settings['eval_size'] or 'all'} points):\n\n"
                + summary_table(summary)
            )
    if all_rows:
        pd.concat(all_rows, ignore_index=True).to_csv(args.out / "results.csv", index=False)
    (args.out / "RESULTS.md").write_text("".join(md))
    print("".join(md))
    print(f"wrote {args.out / 'RESULTS.md'} and {args.out / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
