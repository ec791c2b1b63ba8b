"""``ppl-vae interpolate``: decoded strips between pairs of inputs, in latent space."""

from __future__ import annotations

from ppl_vae.commands import options as tk

NAME = "interpolate"
HELP = "decode paths (linear or slerp) between the latent codes of pairs of inputs (PNG)"


def add_arguments(p):
    from ppl_vae.analysis.generation import INTERPOLATIONS

    tk.add_common(p, num=8, num_help="number of pairs (inputs 0..N-1 paired with N..2N-1)")
    p.add_argument("--method", choices=INTERPOLATIONS, default="linear",
                   help="straight line (default) or spherical interpolation")
    p.add_argument("--steps", type=int, default=10, metavar="S",
                   help="images per strip, endpoints included (default 10)")


def run(args) -> int:
    from ppl_vae.analysis.generation import interpolate
    from ppl_vae.errors import ConfigError
    from ppl_vae.io.plots import save_image_grid

    n = tk.positive(args.num, "--num")
    if args.steps < 2:
        raise ConfigError(f"--steps must be >= 2, got {args.steps}")
    out = tk.out_png(args.out)
    r, device = tk.load(args)
    x = tk.data(r, args, device)
    if 2 * n > x.shape[0]:
        raise ConfigError(f"--num {n} pairs need {2 * n} points; the split has {x.shape[0]}")
    path = interpolate(r.model, r.guide, x[:n], x[n:2 * n], steps=args.steps,
                       method=args.method, mean=True)
    print(save_image_grid(path.reshape(-1, path.shape[-1]).cpu(), r.dataset.image_shape, out,
                          ncol=args.steps,
                          title=f"{args.method} interpolation of posterior means "
                                f"(rows: pairs of {args.split} inputs)"))
    return 0
