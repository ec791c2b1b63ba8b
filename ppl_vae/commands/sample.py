"""``ppl-vae sample``: generate from a trained run (samples, reconstructions, interpolations)."""

from __future__ import annotations

from ppl_vae.commands import add_checkpoint_argument

from pathlib import Path

NAME = "sample"
HELP = "decode prior samples, reconstructions and latent interpolations of a trained run to PNG"


def add_arguments(p):
    p.add_argument("--run", required=True, help="run directory written by `ppl-vae train`")
    add_checkpoint_argument(p)
    p.add_argument("-n", "--num", type=int, default=64, help="number of prior samples")
    p.add_argument("--out", default=None, help="output directory (default: the run directory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", help="split for reconstructions/interpolations")


def run(args) -> int:
    import torch

    from ppl_vae.errors import ConfigError
    from ppl_vae.generate import interpolate, reconstruct, sample_images
    from ppl_vae.plots import save_image_grid
    from ppl_vae.runs import load_run

    if args.num < 1:
        raise ConfigError(f"--num must be >= 1, got {args.num}")
    r = load_run(args.run, checkpoint=args.checkpoint)
    out = Path(args.out or args.run)
    out.mkdir(parents=True, exist_ok=True)
    shape = r.dataset.image_shape
    torch.manual_seed(args.seed)
    written = [save_image_grid(sample_images(r.model, args.num), shape, out / "samples.png",
                               title="E[x|z], z ~ p(z)")]
    x = r.split(args.split)
    written.append(save_image_grid(torch.cat([x[:16], reconstruct(r.model, r.guide, x[:16])]),
                                   shape, out / "reconstructions.png", ncol=16,
                                   row_labels=["data", "recon"]))
    path = interpolate(r.model, r.guide, x[:8], x[8:16], steps=10)
    written.append(save_image_grid(path.reshape(-1, path.shape[-1]), shape,
                                   out / "interpolations.png", ncol=10,
                                   title="latent interpolation (rows: pairs of test images)"))
    for w in written:
        print(w)
    return 0
