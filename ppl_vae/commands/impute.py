"""``ppl-vae impute``: fill in missing pixels with samples of p(x_miss | x_obs).

Method: importance resampling with the guide (:mod:`ppl_vae.marginal.imputation`, which explains the
choice). ``--json`` prints one object: ``vae_error`` (MSE on the missing pixels of the VAE's
conditional mean E[x_miss | x_obs]), ``baseline_error`` (the same for the per-pixel training
mean), ``pseudo_gibbs_error`` (Rezende et al.'s iteration, for comparison), and the conditional
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
    import math

    import torch

    from ppl_vae.analysis.generation import impute_pseudo_gibbs as pseudo_gibbs
    from ppl_vae.io.plots import save_image_grid
    from ppl_vae.marginal.imputation import impute, missing_mask

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
    res = impute(r.model, r.guide, x, observed, k, fill=train_mean)
    miss = ~observed
    vae_err = float(((res.mean - x) ** 2)[miss].mean())
    base_fill = torch.where(observed, x, train_mean)
    base_err = float(((base_fill - x) ** 2)[miss].mean())
    torch.manual_seed(args.seed)
    pg = pseudo_gibbs(r.model, r.guide, x, observed, iterations=20)
    pg_err = float(((pg - x) ** 2)[miss].mean())
    # the per-pixel-mean baseline as a predictive density (Bernoulli data only)
    base_ll = None
    if getattr(getattr(r.model, "likelihood", None), "binary", False):
        p = train_mean.clamp(1e-3, 1 - 1e-3).expand_as(x)
        ll = torch.where(x > 0.5, p.log(), (1 - p).log())
        base_ll = float((ll * miss).sum(-1).mean())

    m = min(n_show, x.shape[0])
    shown_obs = torch.where(observed[:m], x[:m], torch.full_like(x[:m], 0.5))
    draws = [res.samples[:m]]
    for _ in range(2):
        draws.append(impute(r.model, r.guide, x[:m], observed[:m], k,
                                       fill=train_mean).samples)
    rows = [x[:m], shown_obs, res.mean[:m], *draws, base_fill[:m]]
    labels = ["data", "observed", "E[x_miss|x_obs]", "draw 1", "draw 2", "draw 3", "mean fill"]
    path = save_image_grid(torch.cat(rows).cpu(), shape, out, ncol=m, row_labels=labels,
                           title=f"imputation ({args.missing} missing; grey = missing)")
    summary = {
        "method": res.method, "missing": args.missing, "split": args.split, "n": x.shape[0],
        "samples": k, "missing_fraction": float(miss.float().mean()),
        "vae_error": vae_err, "baseline_error": base_err, "pseudo_gibbs_error": pg_err,
        "vae_log_likelihood": float(res.log_likelihood.mean()),
        "vae_log_likelihood_stderr": float(res.log_likelihood.std() / math.sqrt(x.shape[0]))
        if x.shape[0] > 1 else None,
        "baseline_log_likelihood": base_ll,
        "ess_mean": float(res.ess.mean()), "ess_min": float(res.ess.min()), "out": str(path),
    }
    if args.json:
        tk.emit_json(summary)
    else:
        print(path)
        print(f"{args.missing}: MSE on missing pixels  VAE {vae_err:.4f}  mean fill "
              f"{base_err:.4f}  pseudo-Gibbs {pg_err:.4f};  log p(x_miss|x_obs) "
              f"{summary['vae_log_likelihood']:.3f} nats"
              + (f" (mean-fill Bernoulli {base_ll:.3f})" if base_ll is not None else ""))
    return 0
