"""``ppl-vae embed``: the test set's posterior means as a representation, for one or more runs.

Per run: a 2-D scatter of E_q[z|x] coloured by label (PCA to 2-D above two dimensions; all
latent sites of a hierarchical run concatenated), the accuracy of a k-NN classifier fitted on the
training split's codes and scored on ``--split``'s, and normality statistics of the aggregate
posterior (:mod:`ppl_vae.analysis.representation`: ``normality`` = KL(N(m, S) || N(0, I)) of the
Gaussian
fitted to 10 draws z ~ q(z|x) per point of ``--split``).
Writes ``OUT/embed.png`` and ``OUT/embed.csv`` (one row per run); ``--json`` prints one object
keyed by run.
"""

from __future__ import annotations

from ppl_vae.commands import options as tk

NAME = "embed"
HELP = ("scatter the posterior means of several runs by label; k-NN accuracy and normality of "
        "the codes (PNG + CSV)")


def add_arguments(p):
    p.add_argument("--run", required=True, action="append", metavar="DIR",
                   help="run directory (repeat --run for several runs, shown side by side)")
    from ppl_vae.commands import add_checkpoint_argument

    add_checkpoint_argument(p)
    p.add_argument("--out", required=True, metavar="DIR_OUT",
                   help="output directory for embed.png and embed.csv")
    p.add_argument("--split", default="test", metavar="SPLIT",
                   help="split to embed and score: train, valid or test (default)")
    p.add_argument("--neighbors", type=int, default=5, metavar="K",
                   help="neighbours of the k-NN classifier (default 5)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="torch device, e.g. cpu (default) or cuda")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")


def run(args) -> int:
    from pathlib import Path

    import matplotlib.pyplot as plt
    import pandas as pd

    from ppl_vae.analysis.representation import (
        aggregate_samples,
        knn_accuracy,
        normality,
        pca_2d,
        posterior_means,
    )
    from ppl_vae.errors import ConfigError
    from ppl_vae.io.checkpoint import atomic_write_bytes
    from ppl_vae.io.plots import save_figure

    tk.positive(args.neighbors, "--neighbors")
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        raise ConfigError(f"--out {out}: give a directory (embed.png and embed.csv go there)")
    results, panels = {}, []
    for run_dir in args.run:
        r, device = tk.load(args, run_dir)
        ds = r.dataset
        y_train, y = ds.labels_for("train"), ds.labels_for(args.split)
        z_train = posterior_means(r.guide, r.split("train").to(device)).cpu()
        x = r.split(args.split).to(device)
        z = posterior_means(r.guide, x).cpu()
        stats = normality(aggregate_samples(r.guide, x, draws=10).cpu().numpy())
        res = {"model": r.config.model, "guide": r.config.guide,
               "latent_dim": int(z.shape[1]), "n": int(z.shape[0]),
               "knn_accuracy": knn_accuracy(z_train, y_train, z, y, args.neighbors),
               "normality": stats["kl_to_prior"], **stats}
        results[str(run_dir)] = res
        xy, ratio = pca_2d(z.numpy())
        panels.append((str(run_dir), r.config.model, xy, y.numpy(), ratio, res))
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.3), squeeze=False)
    for ax, (name, model, xy, lab, ratio, res) in zip(axes[0], panels):
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=lab, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
        pc = "" if ratio[0] != ratio[0] else f" (PCA {ratio.sum():.0%} of variance)"
        ax.set_title(f"{Path(name).name} [{model}]{pc}\nk-NN acc {res['knn_accuracy']:.3f}, "
                     f"KL(fit || N(0,I)) {res['normality']:.2f}", fontsize=9)
        ax.set_xlabel("PC 1" if pc else "z[0]"), ax.set_ylabel("PC 2" if pc else "z[1]")
    fig.subplots_adjust(wspace=0.3)
    fig.colorbar(sc, ax=axes[0].tolist(), label="label", ticks=range(10))
    png = save_figure(fig, out / "embed.png")
    df = pd.DataFrame([{"run": k, **v} for k, v in results.items()])
    atomic_write_bytes(out / "embed.csv", df.to_csv(index=False).encode())
    if args.json:
        tk.emit_json(results)
    else:
        print(png)
        print(out / "embed.csv")
        for k, v in results.items():
            print(f"{k}: k-NN accuracy {v['knn_accuracy']:.3f}; KL(fitted Gaussian || N(0, I)) "
                  f"{v['normality']:.3f}, |skew| {v['mean_abs_skewness']:.3f}, |excess kurt| "
                  f"{v['mean_abs_excess_kurtosis']:.3f}")
    return 0
