"""``ppl-vae compare-estimators``: train one copy per gradient estimator and compare."""

from __future__ import annotations

from pathlib import Path

NAME = "compare-estimators"
HELP = ("train one model per gradient estimator from the same initial weights and seed; write a "
        "tidy CSV and plots (variance, ELBO vs steps and vs seconds)")

DEFAULT_ESTIMATORS = "reparam,analytic-kl,score,score-avg,score-nn,iwae-5,rws-5,stl,dreg-5"


def add_arguments(p):
    p.add_argument("--data", default="digits",
                   help="digits (default), binarized-mnist, mnist, or a path to .npz/.npy")
    p.add_argument("--estimators", default=DEFAULT_ESTIMATORS,
                   help=f"comma-separated registered objectives (default {DEFAULT_ESTIMATORS})")
    p.add_argument("--steps", type=int, default=1000, help="SVI steps per estimator")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--model", default="vae", help="model family: vae (default) or sbn")
    p.add_argument("--latent-dim", type=int, default=10, help="latent dimension (default 10)")
    p.add_argument("--hidden", default="200", help="encoder hidden widths (default 200)")
    p.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--particles", type=int, default=1,
                   help="particles per step for names without a -K suffix (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--eval-split", default="valid", help="evaluation split (default valid)")
    p.add_argument("--eval-size", type=int, default=1000,
                   help="evaluation points (default 1000; 0 = the whole split)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="evaluate the ELBO every N steps (default steps/20)")
    p.add_argument("--is-samples", type=int, default=100,
                   help="importance samples K for the final log-likelihood (default 100)")
    p.add_argument("--draws", type=int, default=50,
                   help="gradient draws G for the variance at the initial weights (default 50)")
    p.add_argument("--warmup", type=int, default=None,
                   help="baseline warm-up draws before measuring the variance (default 300)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def load_binary_splits(spec: str, eval_split: str = "valid", eval_size: int = 0):
    """``(train, eval, dataset)``: the data as a Bernoulli likelihood sees it (grey data are
    statically binarized with the data module's fixed seed)."""
    from ppl_vae.data import load_dataset
    from ppl_vae.models import BernoulliLikelihood

    ds = load_dataset(spec, likelihood="bernoulli")
    lik = BernoulliLikelihood()
    train, evaluation = ds.split_for("train", lik), ds.split_for(eval_split, lik)
    if eval_size:
        evaluation = evaluation[: int(eval_size)]
    return train, evaluation, ds


def run(args) -> int:
    from ppl_vae.commands.grad_variance import _parse_names
    from ppl_vae.estimator_comparison import compare_estimators, plot_comparison, summary_table

    names = _parse_names(args.estimators)
    hidden = tuple(int(h) for h in str(args.hidden).split(",") if h.strip())
    train, evaluation, ds = load_binary_splits(args.data, args.eval_split, args.eval_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = compare_estimators(
        train, evaluation, names, model_family=args.model, latent_dim=args.latent_dim,
        hidden=hidden, activation=args.activation, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, num_particles=args.particles, eval_every=args.eval_every,
        is_samples=args.is_samples, draws=args.draws, warmup=args.warmup,
        progress=not args.quiet,
    )
    result.tidy.to_csv(out / "results.csv", index=False)
    result.summary.to_csv(out / "summary.csv", index=False)
    table = summary_table(result.summary)
    (out / "summary.md").write_text(table)
    plot_comparison(result, out, title=f"{ds.name}, {args.model}")
    print(table, end="")
    print(f"wrote {out / 'results.csv'}, summary.csv, summary.md, variance.png, "
          "elbo_vs_steps.png, elbo_vs_seconds.png")
    return 0
