"""``ppl-vae posterior``: NUTS samples of p(z | x_I) next to the guide's q(z | x_I), ArviZ
diagnostics, and the approximation / amortization gaps (Cremer, Li & Duvenaud 2018).

See :mod:`ppl_vae.analysis.posterior`. The figure shows, per index, a 2-D scatter (2-D latent) or
the
marginals of the first coordinates (more dims; all latent sites concatenated). ``--json`` prints
one object: per point ``log_px``, ``elbo_amortized``, ``elbo_optimized``,
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


def _figure(points, path, split):
    import matplotlib.pyplot as plt
    import numpy as np

    from ppl_vae.io.plots import save_figure

    dim = points[0]["nuts"].shape[-1]
    n = len(points)
    if dim == 2:
        fig, axes = plt.subplots(1, n, figsize=(4 * n, 4), squeeze=False)
        for ax, pt in zip(axes[0], points):
            a, b = pt["nuts"].numpy(), pt["guide"].numpy()
            ax.scatter(b[:, 0], b[:, 1], s=3, alpha=0.3, color="tab:orange", label="q(z|x) guide")
            ax.scatter(a[:, 0], a[:, 1], s=3, alpha=0.3, color="tab:blue", label="p(z|x) NUTS")
            ax.set_xlabel("z[0]"), ax.set_ylabel("z[1]")
            ax.set_title(pt["title"], fontsize=9)
        axes[0][0].legend(loc="best", fontsize=8, markerscale=3)
    else:
        cols = min(dim, 6)
        fig, axes = plt.subplots(n, cols, figsize=(2.6 * cols, 2.2 * n), squeeze=False)
        for r, pt in enumerate(points):
            for c in range(cols):
                ax = axes[r][c]
                a, b = pt["nuts"][:, c].numpy(), pt["guide"][:, c].numpy()
                lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
                bins = np.linspace(lo, hi, 40)
                ax.hist(a, bins, density=True, alpha=0.5, color="tab:blue", label="NUTS p(z|x)")
                ax.hist(b, bins, density=True, histtype="step", color="tab:orange", lw=1.5,
                        label="guide q(z|x)")
                ax.set_yticks([])
                ax.set_title(f"z[{c}]" + (f"   {pt['title']}" if c == 0 else ""), fontsize=8,
                             loc="left")
        axes[0][0].legend(fontsize=7)
    fig.suptitle(f"posterior of {split} points: NUTS (blue) vs amortized guide (orange)",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def run(args) -> int:
    import math
    import sys

    import torch

    from ppl_vae.analysis.posterior import guide_samples, inference_gaps, nuts_posterior
    from ppl_vae.errors import ConfigError

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
        xi = x[i:i + 1]
        ps = nuts_posterior(r.model, xi, num_samples=args.num_samples, warmup=args.warmup,
                            chains=args.chains, guide=r.guide, seed=args.seed,
                            progress=not args.no_progress)
        nuts = ps.flat()
        draws = guide_samples(r.guide, xi, nuts.shape[0])
        guide = torch.cat([v.reshape(v.shape[0], -1) for v in draws.values()], -1)
        row = {"index": i, "r_hat_max": ps.r_hat_max, "ess_bulk_min": ps.ess_bulk_min,
               "ess_tail_min": float(ps.summary["ess_tail"].min()),
               "divergences": int(sum(ps.divergences)), "nuts_seconds": ps.seconds,
               "posterior_mean": nuts.mean(0), "posterior_sd": nuts.std(0),
               "guide_mean": guide.mean(0), "guide_sd": guide.std(0)}
        title = f"{args.split}[{i}]  R-hat {ps.r_hat_max:.3f}, ESS {ps.ess_bulk_min:.0f}"
        if not args.no_gap:
            gaps = inference_gaps(r.model, r.guide, xi, num_samples=args.samples,
                                  steps=args.gap_steps, seed=args.seed)
            s = gaps.summary()
            row.update(s)
            title += f"\napprox. gap {s['approximation_gap']:.2f}, amort. gap " \
                     f"{s['amortization_gap']:.2f} nats"
        rows.append(row)
        points.append({"nuts": nuts.cpu(), "guide": guide.cpu(), "title": title})
        if not args.no_progress:
            print(f"{args.split}[{i}]: done", file=sys.stderr)
    path = _figure(points, out, args.split)
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
