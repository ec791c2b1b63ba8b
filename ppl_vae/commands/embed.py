"""``ppl-vae embed``: the test set's posterior means as a representation, for one or more runs.

Per run: a 2-D scatter of E_q[z|x] coloured by label (PCA to 2-D above two dimensions; all
latent sites of a hierarchical run concatenated), the accuracy of a k-NN classifier fitted on the
training split's codes and scored on ``--split``'s, and normality statistics of the aggregate
posterior (:func:`ppl_vae.analysis.representation.evaluate_representation`: ``normality`` =
KL(N(m, S) || N(0, I)) of the Gaussian fitted to 10 draws z ~ q(z|x) per point of ``--split``);
the figure is :func:`ppl_vae.io.plots.plot_embeddings`.
Writes ``OUT/embed.png`` and ``OUT/embed.csv`` (one row per run); ``--json`` prints one object
keyed by run.
"""

from __future__ import annotations

from ppl_vae.commands import options as tk

NAME = "embed"
HELP = ("scatter the posterior means of several runs by label; k-NN accuracy and normality of "
        "the codes (PNG + CSV)")


def add_arguments(p):
    tk.add_run(p, repeat=True)
    p.add_argument("--out", required=True, metavar="DIR_OUT",
                   help="output directory for embed.png and embed.csv")
    tk.add_split(p, help="split to embed and score: train, valid or test (default)")
    p.add_argument("--neighbors", type=int, default=5, metavar="K",
                   help="neighbours of the k-NN classifier (default 5)")
    tk.add_seed(p)
    tk.add_device(p)
    tk.add_json(p)


def run(args) -> int:
    from pathlib import Path

    import pandas as pd

    from ppl_vae.analysis.representation import evaluate_representation, pca_2d
    from ppl_vae.errors import ConfigError
    from ppl_vae.io.checkpoint import atomic_write_bytes
    from ppl_vae.io.plots import plot_embeddings

    tk.positive(args.neighbors, "--neighbors")
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        raise ConfigError(f"--out {out}: give a directory (embed.png and embed.csv go there)")
    results, panels = {}, []
    for run_dir in args.run:
        r, device = tk.load(args, run_dir)
        ds = r.dataset
        y = ds.labels_for(args.split)
        rep = evaluate_representation(r.guide, r.split("train").to(device), ds.labels_for("train"),
                                      r.split(args.split).to(device), y, args.neighbors)
        res = {"model": r.config.model, "guide": r.config.guide, **rep.summary()}
        results[str(run_dir)] = res
        xy, ratio = pca_2d(rep.codes.numpy())
        panels.append({"xy": xy, "labels": y.numpy(), "explained": ratio,
                       "title": f"{Path(run_dir).name} [{r.config.model}]\nk-NN acc "
                                f"{res['knn_accuracy']:.3f}, KL(fit || N(0,I)) "
                                f"{res['normality']:.2f}"})
    out.mkdir(parents=True, exist_ok=True)
    png = plot_embeddings(panels, out / "embed.png")
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
