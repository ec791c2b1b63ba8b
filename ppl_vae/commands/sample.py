"""``ppl-vae sample``: decode prior samples of a trained run into one PNG.

``--mean`` (default) shows E[x|z], ``--draw`` a draw x ~ p(x|z); ``--temperature T`` multiplies
the standard deviation of every latent distribution (:class:`ppl_vae.poutine.handlers.Temperature`).
"""

from __future__ import annotations

from ppl_vae.commands import options as tk

NAME = "sample"
HELP = "decode prior samples z ~ p(z) of a trained run into a PNG (mean image or a draw)"


def add_arguments(p):
    tk.add_common(p, out_help="output PNG file", split=False, num=64,
                  num_help="number of prior samples")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="scale of the prior's standard deviation (default 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mean", dest="mean", action="store_true", default=True,
                   help="show E[x|z] (default)")
    g.add_argument("--draw", dest="mean", action="store_false", help="show a draw x ~ p(x|z)")


def run(args) -> int:
    from ppl_vae.analysis.generation import sample_images
    from ppl_vae.io.plots import save_image_grid

    n = tk.positive(args.num, "--num")
    out = tk.out_png(args.out)
    r, _ = tk.load(args)
    imgs = sample_images(r.model, n, mean=args.mean, temperature=args.temperature)
    what = "E[x|z]" if args.mean else "x ~ p(x|z)"
    t = f", T = {args.temperature:g}" if args.temperature != 1.0 else ""
    print(save_image_grid(imgs.cpu(), r.dataset.image_shape, out, title=f"{what}, z ~ p(z){t}"))
    return 0
