"""``ppl-vae posterior``: NUTS samples of p(z | x_I) next to the guide's q(z | x_I), ArviZ
diagnostics, and the approximation / amortization gaps (Cremer, Li & Duvenaud 2018).

See :func:`ppl_vae.analysis.posterior.check_posterior`. The figure
(:func:`ppl_vae.io.plots.plot_posterior_comparison`) shows, per index, a 2-D scatter (2-D latent)
or the marginals of the first coordinates (more dims; all latent sites concatenated). ``--json``
prints one object: per point ``log_px``, ``elbo_amortized``, ``elbo_optimized``,
``approximation_gap``, ``amortization_gap``, ``r_hat_max``, ``ess_bulk_min``; and their means.
"""

from __future__ import annotations

from ppl_vae.commands import options as tk

NAME = "posterior"
HELP = ("NUTS samples of p(z|x_I) vs the guide's q(z|x_I), R-hat/ESS, and the approximation "
        "and amortization gaps (PNG)")


def add_arguments(p):
    tk.add_common(p, json_flag=True)
    p.add_argument("--index", default="0", metavar="I[,J,...]",
                   help="data point(s) of the split (default 0)")
    p.add_argument("--samples", "-k", type=int, default=5000, metavar="K",
                   help="importance samples for log p(x) and for each ELBO (default 5000)")
    p.add_argument("--num-samples", type=int, default=500, metavar="S",
                   help="NUTS draws per chain after warm-up (default 500)")
    p.add_argument("--warmup", type=int, default=300, metavar="W",
                   help="NUTS warm-up (adaptation) steps per chain (default 300)")
    p.add_argument("--chains", type=int, default=2, metavar="C",
                   help="NUTS chains, run one after another (default 2; R-hat needs >= 2)")
    p.add_argument("--gap-steps", type=int, default=1000, metavar="T",
                   help="SVI steps fitting the per-point guide q* (default 1000)")
    p.add_argument("--no-gap", action="store_true", help="skip the gap computation")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import math
    import sys

    from ppl_vae.analysis.posterior import check_posterior
    from ppl_vae.errors import ConfigError
    from ppl_vae.io.plots import plot_posterior_comparison

    for flag, v in (("--samples", args.samples), ("--num-samples", args.num_samples),
                    ("--chains", args.chains), ("--gap-steps", args.gap_steps)):
        tk.positive(v, flag)
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    out = tk.out_png(args.out)
    r, device = tk.load(args)
    x = tk.data(r, args, device)
    idx = [tk.check_index(i, x.shape[0]) for i in tk.int_list(args.index, "--index")]
    points, rows = [], []
    for i in idx:
        check = check_posterior(r.model, r.guide, x[i:i + 1], num_samples=args.num_samples,
                                warmup=args.warmup, chains=args.chains, seed=args.seed,
                                gaps=not args.no_gap, gap_samples=args.samples,
                                gap_steps=args.gap_steps, progress=not args.no_progress)
        row = {"index": i, **check.summary()}
        title = f"{args.split}[{i}]  R-hat {row['r_hat_max']:.3f}, ESS {row['ess_bulk_min']:.0f}"
        if not args.no_gap:
            title += f"\napprox. gap {row['approximation_gap']:.2f}, amort. gap " \
                     f"{row['amortization_gap']:.2f} nats"
        rows.append(row)
        points.append({"nuts": check.nuts.cpu(), "guide": check.guide.cpu(), "title": title})
        if not args.no_progress:
            print(f"{args.split}[{i}]: done", file=sys.stderr)
    path = plot_posterior_comparison(
        points, out, title=f"posterior of {args.split} points: NUTS (blue) vs amortized guide "
                           "(orange)")
    summary = {"run": str(args.run), "split": args.split, "index": idx,
               "chains": args.chains, "num_samples": args.num_samples, "warmup": args.warmup,
               "samples": args.samples, "gap_steps": args.gap_steps, "points": rows,
               "r_hat_max": max(r_["r_hat_max"] for r_ in rows),
               "ess_bulk_min": min(r_["ess_bulk_min"] for r_ in rows), "out": str(path)}
    if not args.no_gap:
        for key in ("log_px", "elbo_amortized", "elbo_optimized", "approximation_gap",
                    "amortization_gap", "inference_gap"):
            summary[key] = sum(r_[key] for r_ in rows) / len(rows)
    if args.json:
        tk.emit_json(summary)
    else:
        print(path)
        for r_ in rows:
            line = (f"{args.split}[{r_['index']}]: R-hat max {r_['r_hat_max']:.3f}, ESS bulk "
                    f"min {r_['ess_bulk_min']:.0f}")
            if not args.no_gap:
                line += (f"; log p(x) {r_['log_px']:.3f}, ELBO amortized "
                         f"{r_['elbo_amortized']:.3f}, ELBO q* {r_['elbo_optimized']:.3f}; "
                         f"approximation gap {r_['approximation_gap']:.3f}, amortization gap "
                         f"{r_['amortization_gap']:.3f} nats")
            print(line)
        if math.isfinite(summary["r_hat_max"]) and summary["r_hat_max"] > 1.05:
            print("warning: R-hat > 1.05: the chains have not mixed", file=sys.stderr)
    return 0
