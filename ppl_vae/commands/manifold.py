"""``ppl-vae manifold``: the learned manifold (2-D latent) or latent traversals (more dims).

A 2-D top latent: decode a grid of the prior's quantiles (the Normal icdf of a uniform grid;
Kingma & Welling 2014, fig. 4). More dimensions: encode input ``--around`` and move the
dimensions ``--dims`` over the prior's quantiles, the others fixed (two dims: a grid, otherwise a
row per dim). Hierarchical runs use the top latent; the layers below take their conditional means.
"""

from __future__ import annotations

from ppl_vae.commands import options as tk

NAME = "manifold"
HELP = "decode a grid over the top latent's prior quantiles (2-D) or traverse chosen dims (PNG)"


def add_arguments(p):
    tk.add_common(p)
    p.add_argument("--steps", type=int, default=15, metavar="S",
                   help="grid points per dimension (default 15)")
    p.add_argument("--mode", choices=("auto", "grid", "traverse"), default="auto",
                   help="grid: the 2-D manifold (needs a 2-D latent); traverse: --dims around "
                        "--around; auto (default): grid for a 2-D latent, else traverse")
    p.add_argument("--dims", default="0,1", metavar="I,J,...",
                   help="latent dimensions to traverse (default 0,1)")
    p.add_argument("--around", type=int, default=0, metavar="INDEX",
                   help="index of the data point whose code is traversed (default 0)")


def run(args) -> int:
    from ppl_vae.analysis.generation import (
        manifold,
        prior_quantiles,
        site_dim,
        top_latent,
        traverse,
    )
    from ppl_vae.errors import ConfigError
    from ppl_vae.io.plots import save_image_grid

    if args.steps < 2:
        raise ConfigError(f"--steps must be >= 2, got {args.steps}")
    dims = tk.int_list(args.dims, "--dims")
    out = tk.out_png(args.out)
    r, device = tk.load(args)
    x = tk.data(r, args, device)
    site = top_latent(r.model, r.guide, x[:2])
    j = site_dim(r.model, r.guide, x, site)
    mode = args.mode if args.mode != "auto" else ("grid" if j == 2 else "traverse")
    axes = {}
    if mode == "traverse" and len(dims) == 2 == j:
        raise ConfigError(
            f"--dims {args.dims} are both dimensions of {site}: nothing is left at the code of "
            "--around, so the picture would be the grid of prior quantiles; use --mode grid, "
            "or traverse one dimension at a time (e.g. --dims 0 or --dims 0,1,0)")
    if mode == "grid" or (mode == "traverse" and len(dims) == 2):
        d0, d1 = (0, 1) if mode == "grid" else dims
        q = prior_quantiles(r.model, r.guide, x, site, args.steps)
        axes = dict(col_labels=[f"{v:.2f}" for v in q[:, d0].tolist()],
                    xlabel=f"{site}[{d0}] (prior quantile)", ylabel=f"{site}[{d1}]")
    if mode == "grid":
        imgs = manifold(r.model, r.guide, x, steps=args.steps, site=site)
        title = f"decoded grid of p({site}) quantiles (Normal icdf of a uniform grid)"
        ncol, labels = args.steps, [f"{v:.2f}" for v in q[:, 1].flip(0).tolist()]
    else:
        i = tk.check_index(args.around, x.shape[0], "--around")
        imgs = traverse(r.model, r.guide, x[i:i + 1], dims, steps=args.steps, site=site, x_ref=x)
        ncol = args.steps
        labels = ([f"{v:.2f}" for v in q[:, dims[1]].flip(0).tolist()] if len(dims) == 2
                  else [f"{site}[{d}]" for d in dims])
        title = (f"{site}[{dims[0]}] vs {site}[{dims[1]}] around {args.split}[{i}]"
                 if len(dims) == 2 else f"traversal of {site} dims {dims} around {args.split}[{i}]")
    print(save_image_grid(imgs.cpu(), r.dataset.image_shape, out, ncol=ncol, title=title,
                          row_labels=labels, **axes))
    return 0
