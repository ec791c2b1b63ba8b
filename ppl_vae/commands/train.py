"""``ppl-vae train``: fit a model/guide pair with SVI and write a run directory.

Data parallel with ``--nproc N`` or under ``torchrun ... -m ppl_vae train``: see
:mod:`ppl_vae.training.distributed`."""

from __future__ import annotations

import json
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
    "--objective": ("objective", str, "a registered objective (default trace); see "
                    "ppl_vae.available_objectives()"),
    "--particles": ("particles", int, "samples per data point L (K for iwae), vectorized "
                    "(default: the objective's own, 1 or 5 for rws)"),
    "--lr": ("lr", float, "Adam learning rate (default 1e-3)"),
    "--batch-size": ("batch_size", int,
                     "minibatch size (default 16, tuned for the embedded digits; the MNIST "
                     "literature uses 100)"),
    "--epochs": ("epochs", int, "number of epochs (default 30)"),
    "--seed": ("seed", int, "random seed (default 0): same seed, same numbers"),
    "--kl-warmup": ("kl_warmup_epochs", int, "anneal the KL weight from 0 to 1 over N epochs"),
    "--patience": ("patience", int, "stop after N epochs without a better validation ELBO "
                   "(after the warm-up; default 0 = off); best.pt keeps the best epoch"),
    "--schedule": ("schedule", str, "learning rate per epoch: constant (default) or burda "
                   "(lr*10^(-i/7) for 3^i epochs, i=0..7, 3280 epochs; --epochs caps it)"),
    "--adam-eps": ("adam_eps", float, "Adam epsilon (default 1e-8; Burda et al. used 1e-4)"),
    "--adam-betas": ("adam_betas", str, "Adam B1,B2 (default 0.9,0.999)"),
    "--prior-init": ("prior_init", str, "several stochastic layers: how p(z_l|z_l+1) start, "
                     "random (default) or standard (N(0,I): start as the 1-layer VAE)"),
    "--weight-init": ("weight_init", str, "torch (PyTorch's default) or burda (Glorot "
                      "weights, unit initial scales, decoder bias at the pixel means; or a "
                      "+-joined subset of glorot, unit-scale, pixel-bias)"),
}


def add_arguments(p):
    for flag, (dest, typ, help_) in FLAGS.items():
        p.add_argument(flag, dest=f"cfg_{dest}", type=typ, default=None, help=help_,
                       metavar=flag[2:].replace("-", "_").upper())
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (created if missing)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt with its config (epochs may be raised)")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT holds a run: archive all of it (evaluation.csv included) into "
                        "OUT/.old-<timestamp>/ and train a new one")
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="torch device for data and parameters, e.g. cpu (default) or cuda")
    p.add_argument("--compile", dest="compile", action="store_const", const=True, default="auto",
                   help="capture the training step once and run it through torch.compile "
                        "(default: on for runs of at least 5000 steps); a pair that cannot "
                        "be captured stays generic with one warning")
    p.add_argument("--no-compile", dest="compile", action="store_const", const=False,
                   help="always run the generic (eager Pyro) step")
    p.add_argument("--json", action="store_true",
                   help="print the final metrics as one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from ppl_vae.training.distributed import add_arguments as add_distributed_arguments

    add_distributed_arguments(p)


def overrides_from(args) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


def _in_flags(exc, args):
    """The same error, naming the flag the user typed instead of the config field
    (``latent_dims must be ...`` -> ``--latent-dim must be ...``)."""
    import re

    message = str(exc)
    several = "," in str(getattr(args, "cfg_latent_dims", "") or "")
    for flag, (dest, _, _) in FLAGS.items():
        if flag == ("--latent-dim" if several else "--latent-dims"):
            continue  # latent_dims: the flag whose form the user typed
        pattern = rf"^{re.escape(dest)}\b"
        if re.match(pattern, message):
            return type(exc)(re.sub(pattern, flag, message, count=1))
    return exc


def run(args) -> int:
    from ppl_vae.analysis.reports import RunReport
    from ppl_vae.errors import ConfigError
    from ppl_vae.io.reporting import json_safe, resolve_device
    from ppl_vae.training import distributed
    from ppl_vae.training.loop import train

    out = Path(args.out)
    device = resolve_device(args.device)
    try:
        report = RunReport()
        result = train(out=out, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.no_progress, device=device, callbacks=[report],
                       compile=args.compile,
                       **overrides_from(args))
    except ConfigError as exc:
        raise _in_flags(exc, args) from None
    except KeyboardInterrupt as exc:
        # the loop's message says what is on disk (ppl_vae.training.loop._kept)
        saved = ("the last epoch's checkpoint is kept" if distributed.world_size() > 1
                 else str(exc) if "checkpoint" in str(exc) else "checkpoint saved")
        if distributed.is_main():
            if saved.startswith("no checkpoint"):
                print(f"\ninterrupted before the first checkpoint: nothing to resume in {out}",
                      file=sys.stderr)
            else:
                print(f"\ninterrupted: {saved} in {out}; continue with "
                      f"`ppl-vae train --out {out} --resume`", file=sys.stderr)
        return 130
    if not len(result.metrics) or not distributed.is_main():
        return 0
    last = result.metrics.iloc[-1]
    units = report.active_units  # per latent layer (Burda et al. 2016), OUT/active_units.csv
    if args.json:
        print(json.dumps(json_safe({**last.to_dict(), "seconds_total":
                                    float(result.metrics.seconds.sum()), "run": str(out),
                                    "active_units": units.counts, "latent_dims": units.dims,
                                    "best_epoch": result.best_epoch,
                                    "stopped_early": result.stopped_early,
                                    "run_id": result.run_id,
                                    "checkpoint_id": result.checkpoint_id,
                                    "compiled": result.compiled,
                                    "compile_seconds": result.compile_seconds,
                                    "compile_notice": result.compile_notice}),
                         allow_nan=False))
        return 0
    print(f"epoch {int(last.epoch)}: train ELBO {last.train_elbo:.3f}, "
          f"valid ELBO {last.valid_elbo:.3f} nats/point; "
          f"total {result.metrics.seconds.sum():.1f} s; run in {out}")
    print(f"best valid ELBO at epoch {result.best_epoch} (best.pt)"
          + ("; stopped early (patience)" if result.stopped_early else ""))
    print(f"{units.summary()} on the validation split; see {out / 'active_units.csv'}")
    if result.compiled:
        print(f"compiled training step (torch.compile): {result.compile_seconds:.1f} s to "
              "capture and compile, included in the epoch times")
    return 0
