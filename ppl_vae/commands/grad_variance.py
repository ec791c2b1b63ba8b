"""``ppl-vae grad-variance``: gradient-estimator statistics at a trained run's parameters."""

from __future__ import annotations

import json
import math

NAME = "grad-variance"
HELP = ("variance, SNR, bias check (cosine to reparam) and cost of gradient estimators at a "
        "checkpoint")

DEFAULT_ESTIMATORS = "reparam,analytic-kl,score,score-avg,score-nn,iwae-5,rws-5,stl,dreg-5"


def add_arguments(p):
    p.add_argument("--run", required=True, help="run directory written by `ppl-vae train`")
    p.add_argument("--estimators", default=DEFAULT_ESTIMATORS,
                   help=f"comma-separated registered objectives (default {DEFAULT_ESTIMATORS})")
    p.add_argument("--draws", type=int, default=100,
                   help="G, independent gradient estimates per estimator (default 100)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="size of the fixed minibatch the gradients are taken on (default 64)")
    p.add_argument("--split", default="train", help="split the minibatch is drawn from")
    p.add_argument("--particles", type=int, default=1,
                   help="particles per estimate for names without a -K suffix (default 1)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up draws for estimators with baselines (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object keyed by estimator name")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")


def _parse_names(text: str) -> list[str]:
    from ppl_vae.errors import ConfigError

    names = [s.strip() for s in str(text).split(",") if s.strip()]
    if not names:
        raise ConfigError("--estimators: give at least one name")
    return names


def run(args) -> int:
    import torch

    from ppl_vae.errors import ConfigError
    from ppl_vae.gradients import gradient_statistics, json_safe, statistics_frame
    from ppl_vae.runs import load_run

    names = _parse_names(args.estimators)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    run_ = load_run(args.run)
    data = run_.split(args.split)
    gen = torch.Generator().manual_seed(args.seed)
    x = data[torch.randperm(data.shape[0], generator=gen)[: args.batch_size]]
    warmup_data = run_.split("train") if args.split != "train" else data
    model, guide = run_.model, run_.guide
    model.train(), guide.train()
    # the run's own objective resumes with its trained modules (e.g. score-nn's baseline)
    saved = run_.checkpoint.get("objective_modules") or {}
    states = {run_.config.objective: saved} if saved else None
    results = gradient_statistics(model, guide, x, names, draws=args.draws, seed=args.seed,
                                  num_particles=args.particles, warmup=args.warmup,
                                  warmup_data=warmup_data, objective_states=states)
    if args.csv:
        statistics_frame(results).to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(json_safe(results), allow_nan=False))
        return 0
    frame = statistics_frame(results)
    print(f"{run_.run_dir}: {len(x)} points of the {args.split} split, G = {args.draws} draws "
          "(gradient of the batch-sum objective)")
    cols = ["estimator", "total_variance", "variance_encoder", "variance_decoder", "snr_median",
            "cosine_to_reparam", "seconds_per_gradient"]
    print("  ".join(f"{c:>20}" for c in cols))
    for _, row in frame.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float) and not math.isnan(v):
                cells.append(f"{v:>20.4g}")
            else:
                cells.append(f"{'n/a' if v is None or (isinstance(v, float)) else v:>20}")
        print("  ".join(cells))
    return 0
