"""``ppl-vae reconstruct``: data next to E[x|z] decoded from the guide's posterior mean."""

from __future__ import annotations

from ppl_vae.commands import options as tk

NAME = "reconstruct"
HELP = "data next to their reconstructions E[x | z = posterior mean of q(z|x)] (PNG)"


def add_arguments(p):
    tk.add_common(p, num=16, num_help="number of data points (from the start of the split)")
    p.add_argument("--sample", action="store_true",
                   help="decode z ~ q(z|x) instead of the posterior mean")


def run(args) -> int:
    import torch

    from ppl_vae.analysis.generation import reconstruct
    from ppl_vae.io.plots import save_image_grid

    n = tk.positive(args.num, "--num")
    out = tk.out_png(args.out)
    r, device = tk.load(args)
    x = tk.data(r, args, device)[:n]
    rec = reconstruct(r.model, r.guide, x, mean=not args.sample)
    what = "z ~ q(z|x)" if args.sample else "z = E_q[z|x]"
    print(save_image_grid(torch.cat([x, rec]).cpu(), r.dataset.image_shape, out, ncol=x.shape[0],
                          row_labels=["data", "recon"], title=f"reconstructions, {what}"))
    return 0
