"""Kingma & Welling (2014, "Auto-Encoding Variational Bayes"), figures 2 and 3, re-run.

Figure 2: AEVB (objective ``trace``: the reparameterized ELBO) vs wake-sleep (objective ``ws``,
Hinton et al. 1995; :class:`ppl_vae.infer.WakeSleep`) with the same encoder/decoder (one hidden
layer, ``--hidden``; 500 for MNIST in the paper), for each latent size in ``--latent-dims``
(paper: 3, 5, 10, 20, 200): the training and test lower bound (ELBO per point) vs the number of
training points seen.

Figure 3: AEVB vs wake-sleep vs Monte Carlo EM (:class:`ppl_vae.infer.mcem.MonteCarloEM`: HMC
E-step,
10 leapfrog steps, step size adapted to 90% acceptance, 5 Adam M-steps; no guide), latent size
3, 100 hidden units, for each training-set size in ``--train-sizes`` (paper: 1000 and 50000):
the estimated marginal log-likelihood of the test points vs training points seen. Every method
is scored by the same estimator: importance sampling with the *prior* as proposal (naive Monte
Carlo, ``--k`` samples; adequate in 3 dimensions), since MCEM has no guide.

Differences from the paper (stated in docs/kingma_welling.md): Adam instead of Adagrad, no weight
decay prior, a fixed number of epochs; on ``--data digits`` the decoder is Gaussian
(``--likelihood gaussian``), the stand-in for the Frey Face data.

Writes ``OUT/figure2.csv``, ``OUT/figure2.png``, ``OUT/figure3.csv``, ``OUT/figure3.png``.

    python benchmarks/kingma_welling.py --data digits --likelihood gaussian --epochs 30 \\
        --out /tmp/kw
    python benchmarks/kingma_welling.py --data binarized-mnist --hidden 500 --epochs 100 \\
        --train-sizes 1000,50000 --device cuda --out /data/kw      # the paper's scale
    python benchmarks/kingma_welling.py --smoke --out /tmp/kw-smoke
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pyro
import torch
from _common import parser, subset

import ppl_vae  # noqa: F401
from ppl_vae.infer.mcem import MonteCarloEM
from ppl_vae.io.data import load_dataset
from ppl_vae.io.reporting import resolve_device
from ppl_vae.marginal import naive_monte_carlo
from ppl_vae.training.builders import build_model_and_guide
from ppl_vae.training.config import TrainConfig
from ppl_vae.training.loop import estimate_elbo, train

METHODS = {"AEVB": "trace", "wake-sleep": "ws"}


def parse_args(argv=None):
    p = parser(__doc__, device=True, seed=True, smoke="2 epochs, tiny sizes (seconds)")
    p.add_argument("--data", default="digits")
    p.add_argument("--likelihood", default="gaussian")
    p.add_argument("--figures", default="2,3")
    p.add_argument("--latent-dims", default="3,5,10,20,200")
    p.add_argument("--hidden", type=int, default=500, help="figure 2's hidden units")
    p.add_argument("--train-sizes", default="1000,all", help="figure 3 ('all' = whole split)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test-points", type=int, default=250)
    p.add_argument("--k", type=int, default=1000, help="prior samples per test point (fig. 3)")
    return p.parse_args(argv)


def _config(args, latent: int, hidden: int, objective: str) -> dict:
    return dict(data=args.data, likelihood=args.likelihood, latent_dims=(latent,),
                hidden=(hidden,), activation="tanh", objective=objective, lr=args.lr,
                batch_size=args.batch_size, seed=args.seed)


def _svi_curve(args, ds, latent, hidden, method, score) -> list[dict]:
    """Train one epoch at a time (exact resume) and score after each epoch."""
    rows, run_dir = [], args.out / "runs" / f"{method}-{latent}-{hidden}-{len(ds.train)}"
    cfg = _config(args, latent, hidden, METHODS[method])
    pyro.clear_param_store()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        res = train({**cfg, "epochs": epoch}, out=run_dir, resume=epoch > 1, dataset=ds,
                    progress=False, device=args.device, epochs=epoch, overwrite=epoch == 1)
        res.model.eval(), res.guide.eval()
        rows.append({"method": method, "latent": latent, "n_train": len(ds.train),
                     "epoch": epoch, "points_seen": epoch * len(ds.train),
                     "seconds": time.perf_counter() - t0, **score(res.model, res.guide, ds)})
        print(rows[-1], flush=True)
    return rows


def _elbos(model, guide, ds) -> dict:
    lik = model.likelihood
    return {"train_elbo": estimate_elbo(model, guide, ds.split_for("train", lik)[:1000]),
            "test_elbo": estimate_elbo(model, guide, ds.split_for("test", lik))}


def _log_px(args):
    def score(model, guide, ds) -> dict:
        torch.manual_seed(args.seed)
        x = ds.split_for("test", model.likelihood).to(args.device)
        with torch.no_grad():
            res = naive_monte_carlo(model, x, args.k)
        return {"test_log_px": float(res.log_likelihood.double().mean())}
    return score


def _mcem_curve(args, ds, latent, hidden) -> list[dict]:
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    cfg = TrainConfig(**_config(args, latent, hidden, "trace"))
    model, _ = build_model_and_guide(cfg, ds.x_dim)
    model.to(args.device)
    x_train = ds.split_for("train", model.likelihood).to(args.device)
    n = x_train.shape[0]
    em = MonteCarloEM(model, num_data=n, lr=args.lr, m_steps=5, num_leapfrog=10, warmup=10)
    rows, gen = [], torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, args.batch_size):
            idx = perm[i: i + args.batch_size]
            em.step(x_train[idx.to(args.device)], idx)
        model.eval()
        rows.append({"method": "MCEM", "latent": latent, "n_train": n, "epoch": epoch,
                     "points_seen": epoch * n, "seconds": time.perf_counter() - t0,
                     **_log_px(args)(model, None, ds)})
        print(rows[-1], flush=True)
        model.train()
    return rows


def _plot(df: pd.DataFrame, y: list[str], panel: str, path: Path, title: str) -> None:
    from matplotlib.ticker import NullFormatter

    from ppl_vae.io.plots import plt, save_figure

    keys = sorted(df[panel].unique())
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for (method, col), style in zip([(m, c) for m in df.method.unique() for c in y],
                                        ["-", "--", "-.", ":"] * 8):
            d = df[(df[panel] == key) & (df.method == method)]
            ax.plot(d.points_seen, d[col], style, label=f"{method} {col}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{panel} = {key}")
        ax.set_xlabel("training points seen")
    axes[0][0].set_ylabel("nats per point")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.epochs, args.hidden, args.k, args.test_points = 2, 16, 20, 30
        if args.latent_dims == "3,5,10,20,200":
            args.latent_dims = "2,3"
        if args.train_sizes == "1000,all":
            args.train_sizes = "100,200"
    args.device = resolve_device(args.device)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data, likelihood={"name": args.likelihood})
    figures = {f.strip() for f in args.figures.split(",")}
    if "2" in figures:
        rows = []
        for latent in [int(v) for v in args.latent_dims.split(",")]:
            sub = subset(ds, None, args.test_points)
            for method in METHODS:
                rows += _svi_curve(args, sub, latent, args.hidden, method, _elbos)
        df = pd.DataFrame(rows)
        df.to_csv(out / "figure2.csv", index=False)
        _plot(df, ["train_elbo", "test_elbo"], "latent", out / "figure2.png",
              f"AEVB vs wake-sleep, {args.data} ({args.likelihood}), {args.hidden} hidden")
    if "3" in figures:
        rows, hidden3 = [], (16 if args.smoke else 100)
        for size in args.train_sizes.split(","):
            sub = subset(ds, size, args.test_points)
            for method in METHODS:
                rows += _svi_curve(args, sub, 3, hidden3, method, _log_px(args))
            rows += _mcem_curve(args, sub, 3, hidden3)
        df = pd.DataFrame(rows)
        df.to_csv(out / "figure3.csv", index=False)
        _plot(df, ["test_log_px"], "n_train", out / "figure3.png",
              f"AEVB vs wake-sleep vs MCEM, latent 3, {args.data}: test log p(x) (prior IS)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
