"""``ppl-vae compare-estimators``: train one copy per objective (gradient estimator), compare.

With ``--nproc N`` (or under torchrun) the objectives are dealt round-robin over the workers;
rank 0 writes the same files as a single process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ppl_vae.commands import options as tk

NAME = "compare-estimators"
HELP = ("train one model per objective (gradient estimator) from the same initial weights and "
        "seed; write a tidy CSV and plots (variance, ELBO vs steps and vs seconds)")


def add_arguments(p):
    from ppl_vae.infer.objectives import comparison_objectives

    default = ",".join(comparison_objectives())
    p.add_argument("--data", default="digits", metavar="DATA",
                   help="digits (default), binarized-mnist, mnist, or a path to .npz/.npy")
    p.add_argument("--objectives", default=default, metavar="LIST",
                   help=f"comma-separated registered objectives (default {default})")
    p.add_argument("--steps", type=int, default=1000, metavar="S",
                   help="SVI steps per objective (default 1000)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created if missing)")
    p.add_argument("--model", default="vae", metavar="FAMILY",
                   help="model family: vae (default) or sbn")
    p.add_argument("--latent-dim", type=int, default=10, metavar="J",
                   help="latent dimension (default 10)")
    p.add_argument("--hidden", default="200", metavar="H,H",
                   help="encoder hidden widths (default 200)")
    p.add_argument("--activation", default="relu", metavar="NAME",
                   help="hidden activation (default relu)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B",
                   help="minibatch size (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, metavar="LR",
                   help="Adam learning rate (default 1e-3)")
    p.add_argument("--particles", type=int, default=None, metavar="L",
                   help="particles per step for names without a -K suffix (default: each "
                        "objective's own)")
    tk.add_seed(p)
    tk.add_split(p, "valid", "split the ELBO and log-likelihood are measured on (default valid: "
                 "monitoring during training leaves the test split alone)")
    p.add_argument("--limit", type=int, default=1000, metavar="N",
                   help="evaluation points (default 1000; 0 = the whole split)")
    p.add_argument("--eval-every", type=int, default=None, metavar="S",
                   help="evaluate the ELBO every S steps (default steps/20)")
    p.add_argument("--samples", "-k", type=int, default=100, metavar="K",
                   help="importance samples per point for the final log-likelihood (default 100)")
    p.add_argument("--draws", type=int, default=50, metavar="G",
                   help="gradient draws for the variance at the initial weights (default 50)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="baseline warm-up draws before measuring the variance (default 300)")
    tk.add_device(p)
    tk.add_json(p, "print the summary as one JSON list on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from ppl_vae.training.distributed import add_arguments as add_distributed_arguments

    add_distributed_arguments(p)


#: Below this many SVI steps the wall-clock columns are start-up cost and noise.
TIMING_MIN_STEPS = 200


def run(args) -> int:
    from ppl_vae.analysis.estimator_comparison import (
        compare_estimators,
        plot_comparison,
        summary_table,
    )
    from ppl_vae.infer.objectives import parse_objective_list
    from ppl_vae.io.data import binary_splits
    from ppl_vae.io.reporting import json_safe, resolve_device
    from ppl_vae.training import distributed

    names = parse_objective_list(args.objectives)
    device = resolve_device(args.device)
    hidden = tuple(int(h) for h in str(args.hidden).split(",") if h.strip())
    train, evaluation, ds = binary_splits(args.data, args.split, args.limit)
    out = Path(args.out)
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
    result = compare_estimators(
        train.to(device), evaluation.to(device), names, model_family=args.model,
        latent_dim=args.latent_dim, hidden=hidden, activation=args.activation, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, num_particles=args.particles,
        eval_every=args.eval_every, is_samples=args.samples, draws=args.draws,
        warmup=args.warmup, progress=not args.no_progress, device=device,
    )
    if not distributed.is_main():
        return 0
    result.tidy.to_csv(out / "results.csv", index=False)
    result.summary.to_csv(out / "summary.csv", index=False)
    table = summary_table(result.summary)
    if args.steps < TIMING_MIN_STEPS:
        note = (f"note: {args.steps} steps per objective (< {TIMING_MIN_STEPS}): the seconds "
                "columns measure start-up and noise, not the estimators' cost; compare them "
                "only on longer runs\n")
        print(note, end="", file=sys.stderr)
        table += "\n" + note
    (out / "summary.md").write_text(table)
    plot_comparison(result, out, title=f"{ds.name}, {args.model}")
    if args.json:
        print(json.dumps(json_safe(result.summary.to_dict("records")), allow_nan=False))
        return 0
    print(table, end="")
    print(f"wrote {out / 'results.csv'}, summary.csv, summary.md, variance.png, "
          "elbo_vs_steps.png, elbo_vs_seconds.png")
    return 0
