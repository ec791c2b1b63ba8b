"""``ppl-vae train``: fit a model/guide pair with SVI and write a run directory."""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "train"
HELP = "train a VAE (Pyro model + guide) with SVI; writes checkpoint, metrics.csv and PNGs"

# flag -> (config field, type, help). Defaults are None so that only flags given on the command
# line override a resumed checkpoint's config; the real defaults live in TrainConfig.
FLAGS = {
    "--data": ("data", str, "digits (default, embedded), binarized-mnist, mnist, fashion-mnist, "
               "or a path to .npz/.npy"),
    "--model": ("model", str, "model family: vae (default), sbn, ae (deterministic "
                "autoencoder), dae (denoising autoencoder)"),
    "--guide": ("guide", str, "guide family: bottom-up (default), top-down, iaf"),
    "--noise": ("noise", float, "dae: corruption level (masking probability, or Gaussian std; "
                "default 0.25)"),
    "--noise-type": ("noise_type", str, "dae: masking (default) or gaussian"),
    "--flow-depth": ("flow_depth", int, "iaf guide: number of flow steps (default 2)"),
    "--latent-dim": ("latent_dims", str, "latent dimension J (one stochastic layer)"),
    "--latent-dims": ("latent_dims", str, "comma-separated sizes, one per stochastic layer"),
    "--hidden": ("hidden", str, "encoder hidden widths, e.g. 256,256 (decoder mirrors them)"),
    "--likelihood": ("likelihood", str, "bernoulli (default) or gaussian"),
    "--min-scale": ("min_scale", float, "Gaussian likelihood: lower bound on sigma(z)"),
    "--activation": ("activation", str, "relu (default), tanh, softplus, elu"),
    "--objective": ("objective", str, "trace (default), meanfield, tracegraph, iwae, ..."),
    "--particles": ("particles", int, "samples per data point L (K for iwae), vectorized"),
    "--lr": ("lr", float, "Adam learning rate (default 1e-3)"),
    "--batch-size": ("batch_size", int, "minibatch size (default 16, tuned for the embedded digits; the MNIST literature uses 100)"),
    "--epochs": ("epochs", int, "number of epochs (default 30)"),
    "--seed": ("seed", int, "random seed (default 0): same seed, same numbers"),
    "--kl-warmup": ("kl_warmup_epochs", int, "anneal the KL weight from 0 to 1 over N epochs"),
}


def add_arguments(p):
    for flag, (dest, typ, help_) in FLAGS.items():
        p.add_argument(flag, dest=f"cfg_{dest}", type=typ, default=None, help=help_,
                       metavar=flag[2:].upper().replace("-", "_"))
    p.add_argument("--out", required=True, help="run directory (created if missing)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt with its config (epochs may be raised)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def overrides_from(args) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


def run(args) -> int:
    from ppl_vae.training import train

    out = Path(args.out)
    try:
        result = train(out=out, resume=args.resume, progress=not args.no_progress,
                       **overrides_from(args))
    except KeyboardInterrupt:
        print(f"\ninterrupted: checkpoint saved in {out}; continue with "
              f"`ppl-vae train --out {out} --resume`", file=sys.stderr)
        return 130
    last = result.metrics.iloc[-1] if len(result.metrics) else None
    if last is not None:
        print(f"epoch {int(last.epoch)}: train ELBO {last.train_elbo:.3f}, "
              f"valid ELBO {last.valid_elbo:.3f} nats/point; "
              f"total {result.metrics.seconds.sum():.1f} s; run in {out}")
        # Active units per latent layer (Burda et al. 2016): writes OUT/active_units.csv.
        from ppl_vae.active_units import report_active_units

        units = report_active_units(result.model, result.guide, result.dataset, out,
                                    seed=result.config.seed)
        print(f"{units.summary()} on the validation split; see {out / 'active_units.csv'}")
    return 0
