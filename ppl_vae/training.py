"""Train a model/guide pair with SVI: epochs, validation, checkpoints, metrics, figures.

:func:`train` maximizes the chosen objective (see :mod:`ppl_vae.objectives`) by minibatch SVI.
The data plate carries the full training-set size, so each minibatch loss is an unbiased estimate
of the full-data negative ELBO; we report per-data-point values in nats:

* ``train_elbo``: the epoch average of the training objective's estimate (the ELBO for
  trace/meanfield/tracegraph, the IWAE bound L_K for iwae; during KL warm-up, the annealed bound);
* ``valid_elbo``: the standard ELBO E_q[log p(x,z) - log q(z|x)] on the validation split, one
  sample per point with a fixed seed, whatever the training objective — comparable across runs.

Reproducibility: the RNGs are re-seeded from (seed, epoch) at the start of every epoch, so the
same seed gives the same numbers, and a run resumed at an epoch boundary continues exactly as if
it had never stopped.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyro
import torch
from pyro.infer import Trace_ELBO
from tqdm.auto import tqdm

from .builders import build_model_and_guide
from .checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import Dataset, load_dataset
from .errors import CheckpointError, ConfigError, TrainingDivergedError
from .handlers import ScaleLatents
from .objectives import make_objective
from .svi import SVI

__all__ = ["train", "TrainResult", "estimate_elbo", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.csv"


@dataclass
class TrainResult:
    model: torch.nn.Module
    guide: torch.nn.Module
    config: TrainConfig
    metrics: pd.DataFrame
    dataset: Dataset
    run_dir: Path | None
    interrupted: bool = False


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"received signal {signum}")


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**31 - 1)


@torch.no_grad()
def estimate_elbo(model, guide, x, batch_size: int = 1000, seed: int = 0) -> float:
    """Mean per-point ELBO on ``x`` (one reparameterized sample per point, fixed seed).

    The global RNG state is saved and restored, so evaluation never perturbs training.
    """
    elbo = Trace_ELBO(num_particles=1, max_plate_nesting=1)
    total = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, x.shape[0], batch_size):
            total -= elbo.loss(model, guide, x[i: i + batch_size])
    return total / x.shape[0]


def _write_metrics(rows: list[dict], path: Path) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["epoch", "train_elbo", "valid_elbo", "seconds"])
    atomic_write_bytes(path, df.to_csv(index=False).encode())
    return df


def _payload(config, model, guide, svi, epochs_done, metrics, elapsed, x_dim,
             interrupted=False):
    return {
        "config": config.to_dict(),
        "x_dim": int(x_dim),
        "model": model.state_dict(),
        "guide": guide.state_dict(),
        "objective_modules": {k: m.state_dict() for k, m in svi.objective.modules.items()},
        "optimizer": svi.state_dict(),
        "epochs_done": int(epochs_done),
        "metrics": [dict(r) for r in metrics],
        "elapsed": float(elapsed),
        "interrupted": bool(interrupted),
    }


def load_state(model, guide, payload, source="checkpoint", objective_modules=None) -> None:
    """Load model/guide weights from a checkpoint payload; :class:`CheckpointError` on mismatch."""
    for name, module in (("model", model), ("guide", guide)):
        try:
            module.load_state_dict(payload[name])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise CheckpointError(
                f"{source}: the {name} weights do not fit the architecture of its config "
                f"({'; '.join(s.strip() for s in first[:3])})"
            ) from exc
    for name, module in (objective_modules or {}).items():
        if name in payload.get("objective_modules", {}):
            module.load_state_dict(payload["objective_modules"][name])


def _plots(model, guide, dataset, run_dir: Path, seed: int) -> None:
    from .generate import reconstruct, sample_images
    from .plots import save_image_grid

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            imgs = sample_images(model, 64)
            save_image_grid(imgs, dataset.image_shape, run_dir / "samples.png", ncol=8,
                            title="E[x|z], z ~ p(z)")
        except ConfigError:
            pass  # no proper prior to sample (an autoencoder): no samples.png
        x = dataset.split_for("valid", model.likelihood)[:16] if hasattr(model, "likelihood") \
            else dataset.valid[:16]
        rec = reconstruct(model, guide, x)
        both = torch.cat([x, rec])
        save_image_grid(both, dataset.image_shape, run_dir / "reconstructions.png", ncol=16,
                        row_labels=["data", "recon"])


def train(config: TrainConfig | dict | None = None, out=None, *, resume: bool = False,
          progress: bool = True, dataset: Dataset | None = None, plots: bool = True,
          **overrides) -> TrainResult:
    """Train the model/guide pair described by ``config`` (keyword ``overrides`` win).

    ``out``: a run directory receiving ``checkpoint.pt`` (atomic, after every epoch),
    ``metrics.csv``, ``config.json``, ``samples.png`` and ``reconstructions.png``.
    ``resume=True`` continues from ``out/checkpoint.pt`` (the checkpoint's config is used; an
    explicitly different architecture is an error; ``epochs`` may be raised).

    On a NaN/inf loss, raises :class:`TrainingDivergedError` naming the epoch and step; the last
    checkpoint (end of the last good epoch) is left untouched. On Ctrl-C or SIGTERM, saves a
    checkpoint of the current parameters and raises ``KeyboardInterrupt``.
    """
    if isinstance(config, TrainConfig):
        config = config.to_dict()
    requested = {**(config or {}), **overrides}
    run_dir = Path(out) if out is not None else None
    ckpt_path = run_dir / CHECKPOINT_NAME if run_dir is not None else None

    payload = None
    if resume:
        if ckpt_path is None:
            raise ConfigError("resume=True needs the run directory (out)")
        payload = load_checkpoint(ckpt_path)
        saved = TrainConfig.from_dict(payload["config"])
        config = TrainConfig.from_dict({**saved.to_dict(), **requested})
        clash = {k: v for k, v in saved.differences(config).items()
                 if k in TrainConfig.ARCHITECTURE}
        if clash:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}"
                               for k, (a, b) in clash.items())
            raise CheckpointError(f"{ckpt_path}: incompatible config ({detail})")
    else:
        config = TrainConfig.from_dict(requested)

    if dataset is None:
        dataset = load_dataset(config.data, likelihood=config.likelihood_spec())
    pyro.set_rng_seed(config.seed)
    model, guide = build_model_and_guide(config, dataset.x_dim)
    objective = make_objective(config.objective, num_particles=config.particles,
                               x_dim=dataset.x_dim)
    anneal = ScaleLatents(1.0) if config.kl_warmup_epochs > 0 else None
    step_model, step_guide = (anneal(model), anneal(guide)) if anneal else (model, guide)
    svi = SVI(step_model, step_guide, objective, lr=config.lr, modules=(model, guide))
    metrics: list[dict] = []
    start_epoch, elapsed = 0, 0.0
    if payload is not None:
        load_state(model, guide, payload, str(ckpt_path), objective.modules)
        svi.load_state_dict(payload.get("optimizer", {}))
        start_epoch = int(payload.get("epochs_done", 0))
        metrics = list(payload.get("metrics", []))
        elapsed = float(payload.get("elapsed", 0.0))

    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "config.json", json.dumps(config.to_dict(), indent=2).encode())

    likelihood = getattr(model, "likelihood", None)
    x_train = dataset.train
    binarize = bool(getattr(likelihood, "binary", False)) and not bool(
        ((x_train == 0) | (x_train == 1)).all())
    x_valid = dataset.split_for("valid", likelihood) if likelihood is not None else dataset.valid
    n, bs = x_train.shape[0], min(config.batch_size, x_train.shape[0])
    steps_per_epoch = math.ceil(n / bs)


    bar = tqdm(total=(config.epochs - start_epoch) * steps_per_epoch, disable=not progress,
               desc="train", unit="step", dynamic_ncols=True, leave=True)
    epoch = start_epoch
    # SIGTERM (a scheduler or `kill`) is handled like Ctrl-C: save, then stop.
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            seed = _epoch_seed(config.seed, epoch)
            pyro.set_rng_seed(seed)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            running, seen = 0.0, 0
            for step in range(steps_per_epoch):
                idx = perm[step * bs: (step + 1) * bs]
                xb = x_train[idx]
                if binarize:
                    xb = torch.bernoulli(xb)
                if anneal is not None:
                    anneal.beta = min(1.0, (epoch * steps_per_epoch + step + 1)
                                      / (config.kl_warmup_epochs * steps_per_epoch))
                loss = svi.step(xb, num_data=n)
                if not math.isfinite(loss):
                    raise TrainingDivergedError(
                        f"loss became {loss} at epoch {epoch + 1}, step {step + 1} "
                        f"(global step {epoch * steps_per_epoch + step + 1}); "
                        + (f"the last good checkpoint ({start_epoch if not metrics else metrics[-1]['epoch']} "
                           f"epochs) is kept at {ckpt_path}" if ckpt_path and ckpt_path.exists()
                           else "no checkpoint was written")
                        + "; try a lower --lr")
                running += loss * len(idx) / n
                seen += len(idx)
                bar.update(1)
                if step % 10 == 0 or step == steps_per_epoch - 1:
                    bar.set_postfix_str(f"epoch {epoch + 1}/{config.epochs} "
                                        f"-elbo/pt {running / seen:.3f}", refresh=False)
            train_elbo = -running / seen
            model.eval(), guide.eval()
            valid_elbo = estimate_elbo(model, guide, x_valid, seed=config.seed)
            model.train(), guide.train()
            if not math.isfinite(valid_elbo):
                raise TrainingDivergedError(
                    f"validation ELBO became {valid_elbo} after epoch {epoch + 1}")
            seconds = time.perf_counter() - t0
            elapsed += seconds
            metrics.append({"epoch": epoch + 1, "train_elbo": train_elbo,
                            "valid_elbo": valid_elbo, "seconds": seconds})
            bar.set_postfix_str(f"epoch {epoch + 1}/{config.epochs} train {train_elbo:.3f} "
                                f"valid {valid_elbo:.3f}")
            if run_dir is not None:
                save_checkpoint(ckpt_path, _payload(config, model, guide, svi, epoch + 1,
                                                    metrics, elapsed, dataset.x_dim))
                _write_metrics(metrics, run_dir / METRICS_NAME)
    except KeyboardInterrupt:
        bar.close()
        if run_dir is not None:
            params_ok = all(torch.isfinite(p).all() for p in svi.parameters())
            if params_ok:
                save_checkpoint(ckpt_path, _payload(config, model, guide, svi, epoch, metrics,
                                                    elapsed, dataset.x_dim, interrupted=True))
                _write_metrics(metrics, run_dir / METRICS_NAME)
        raise
    finally:
        bar.close()
        if in_main:
            signal.signal(signal.SIGTERM, old_term)

    df = pd.DataFrame(metrics, columns=["epoch", "train_elbo", "valid_elbo", "seconds"])
    if run_dir is not None:
        _write_metrics(metrics, run_dir / METRICS_NAME)
        if plots:
            _plots(model, guide, dataset, run_dir, config.seed)
    return TrainResult(model, guide, config, df, dataset, run_dir)
