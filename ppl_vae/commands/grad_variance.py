"""``ppl-vae grad-variance``: gradient-estimator statistics at a trained run's parameters
(:func:`ppl_vae.analysis.gradient_variance.run_gradient_statistics`)."""

from __future__ import annotations

import json
import math

from ppl_vae.commands import options as tk

NAME = "grad-variance"
HELP = ("variance, SNR, agreement with a reference (cosine, bias) and cost of each "
        "objective's gradient estimator at a checkpoint")


def add_arguments(p):
    from ppl_vae.infer.objectives import comparison_objectives

    default = ",".join(comparison_objectives())
    tk.add_run(p)
    p.add_argument("--objectives", default=default, metavar="LIST",
                   help=f"comma-separated registered objectives (default {default})")
    p.add_argument("--draws", type=int, default=100, metavar="G",
                   help="independent gradient estimates per objective (default 100)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B",
                   help="size of the fixed minibatch the gradients are taken on (default 64)")
    tk.add_split(p, "train", "split the minibatch is drawn from (default train: the gradients "
                 "are those of the training objective)")
    p.add_argument("--particles", type=int, default=None, metavar="L",
                   help="particles per estimate for names without a -K suffix (default: each "
                        "objective's own)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="warm-up draws for objectives with baselines (default 300)")
    tk.add_seed(p)
    tk.add_device(p)
    tk.add_json(p, "print exactly one JSON object keyed by objective name")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="also write the table to this CSV file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _bias_cell(row) -> str:
    """``yes: z 37.3 > 4.32`` (a bias beyond the noise level), ``no: z 2.1 <= 4.32``,
    ``reference``, or ``n/a: target L_5`` for an estimator of another objective's gradient."""
    z, threshold = row["bias_z_max"], row["bias_z_threshold"]
    if z is None or (isinstance(z, float) and math.isnan(z)):
        return "reference" if row["objective"] == row["reference"] else "n/a"
    if row["bias_detected"] is None:
        return f"n/a: target {row['target']}"
    if row["bias_detected"]:
        return f"yes: z {z:.3g} > {threshold:.3g}"
    return f"no: z {z:.3g} <= {threshold:.3g}"


def _print_table(frame, header: str) -> None:
    print(header)
    cols = ["objective", "total_variance", "variance_encoder", "variance_decoder", "snr_median",
            "cosine_to_reference", "seconds_per_gradient"]
    print("  ".join(f"{c:>20}" for c in cols) + f"  {'bias':>22}")
    for _, row in frame.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float) and not math.isnan(v):
                cells.append(f"{v:>20.4g}")
            else:
                cells.append(f"{'n/a' if v is None or isinstance(v, float) else v:>20}")
        print("  ".join(cells) + f"  {_bias_cell(row):>22}")
    references = frame.reference.dropna().unique()
    if len(references):
        print(f"bias: max over coordinates of |mean - {references[0]}'s mean| / standard error, "
              "against the level an unbiased estimator exceeds with probability 0.001")


def run(args) -> int:
    from ppl_vae.analysis.gradient_variance import run_gradient_statistics, statistics_frame
    from ppl_vae.errors import ConfigError
    from ppl_vae.infer.objectives import parse_objective_list
    from ppl_vae.io.reporting import json_safe, resolve_device
    from ppl_vae.training.runs import load_run

    names = parse_objective_list(args.objectives)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = resolve_device(args.device)
    run_ = load_run(args.run, map_location=str(device), checkpoint=args.checkpoint)
    results, x = run_gradient_statistics(run_, names, draws=args.draws, split=args.split,
                                         batch_size=args.batch_size, seed=args.seed,
                                         num_particles=args.particles, warmup=args.warmup,
                                         device=device,
                                         progress=not args.no_progress)
    frame = statistics_frame(results)
    if args.csv:
        for key, value in {"run_id": run_.run_id, "checkpoint_id": run_.checkpoint_id}.items():
            frame[key] = value  # which checkpoint the statistics were measured at
        frame.to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(json_safe(results), allow_nan=False))
        return 0
    _print_table(frame, f"{run_.run_dir}: {len(x)} points of the {args.split} split, "
                        f"G = {args.draws} draws (gradient of the batch-sum objective)")
    return 0
