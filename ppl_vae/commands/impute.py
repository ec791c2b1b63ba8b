"""``ppl-vae impute``: fill in missing pixels with samples of p(x_miss | x_obs).

Method: importance resampling with the guide (:mod:`ppl_vae.marginal.imputation`, which explains
the choice), scored by :func:`ppl_vae.analysis.imputation.evaluate_imputation`. ``--json`` prints
one object: ``vae_error`` (MSE on the missing pixels of the VAE's conditional mean
E[x_miss | x_obs]), ``baseline_error`` (the same for the per-pixel training mean),
``pseudo_gibbs_error`` (Rezende et al.'s iteration, for comparison), and the conditional
log-likelihoods log p(x_miss | x_obs) of the VAE (``vae_log_likelihood``, importance sampling)
and of the independent per-pixel-mean Bernoulli baseline, in nats per data point.
"""

from __future__ import annotations

from ppl_vae.commands import options as tk

NAME = "impute"
HELP = "sample missing pixels given the observed ones (importance resampling with the guide; PNG)"


def add_arguments(p):
    tk.add_common(p, json_flag=True, num=8, num_help="number of examples shown")
    p.add_argument("--missing", default="bottom-half", metavar="PATTERN",
                   help="bottom-half (default), right-half or random-P, e.g. random-0.5")
    p.add_argument("--samples", "-k", type=int, default=1000, metavar="K",
                   help="importance samples per data point (default 1000)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="compute the errors on the first N points only (default: all)")


def run(args) -> int:
    from ppl_vae.analysis.imputation import evaluate_imputation, imputation_figure
    from ppl_vae.marginal.imputation import missing_mask

    n_show = tk.positive(args.num, "--num")
    k = tk.positive(args.samples, "--samples")
    if args.limit is not None:
        tk.positive(args.limit, "--limit")
    out = tk.out_png(args.out)
    r, device = tk.load(args)
    x = tk.data(r, args, device)
    if args.limit is not None:
        x = x[:args.limit]
    shape = r.dataset.image_shape
    observed = missing_mask(x.shape[0], shape, args.missing, seed=args.seed).to(device)
    train_mean = r.dataset.train.mean(0).to(device)
    ev = evaluate_imputation(r.model, r.guide, x, observed, train_mean, k, seed=args.seed)
    path = imputation_figure(r.model, r.guide, ev, x, observed, train_mean, shape, out,
                             num=n_show,
                             title=f"imputation ({args.missing} missing; grey = missing)")
    s = ev.summary()
    summary = {"method": s.pop("method"), "missing": args.missing, "split": args.split, **s,
               "out": str(path)}
    if args.json:
        tk.emit_json(summary)
    else:
        base_ll = summary["baseline_log_likelihood"]
        print(path)
        print(f"{args.missing}: MSE on missing pixels  VAE {ev.vae_error:.4f}  mean fill "
              f"{ev.baseline_error:.4f}  pseudo-Gibbs {ev.pseudo_gibbs_error:.4f};  "
              f"log p(x_miss|x_obs) {summary['vae_log_likelihood']:.3f} nats"
              + (f" (mean-fill Bernoulli {base_ll:.3f})" if base_ll is not None else ""))
    return 0
