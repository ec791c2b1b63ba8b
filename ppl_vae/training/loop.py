"""Train a model/guide pair with SVI: epochs, validation, checkpoints, metrics, figures.

:func:`train` maximizes the chosen objective (see :mod:`ppl_vae.infer.objectives`) by minibatch SVI.
The data plate carries the full training-set size, so each minibatch loss is an unbiased estimate
of the full-data negative ELBO; we report per-data-point values in nats:

* ``train_elbo``: the epoch average of the training objective's estimate (the ELBO for
  trace/meanfield/tracegraph, the IWAE bound L_K for iwae; during KL warm-up, the annealed bound);
* ``valid_elbo``: the standard ELBO E_q[log p(x,z) - log q(z|x)] on the validation split, one
  sample per point with a fixed seed, whatever the training objective — comparable across runs.

Reproducibility: the RNGs are re-seeded from (seed, epoch) at the start of every epoch, so the
same seed gives the same numbers. A run resumed after an interruption continues exactly (bit for
bit on CPU) as if it had never stopped:

* the first Ctrl-C or SIGTERM is deferred to the next consistent point: the end of the current
  step (then a checkpoint with the position in the epoch, the RNG states and the running
  average is written, and resuming continues with the next step) or, during validation and the
  checkpoint write, the end of the epoch's checkpoint;
* a second signal, or a ``KeyboardInterrupt`` raised anywhere else, stops at once and writes
  nothing: the last checkpoint on disk is consistent (``best.pt`` is written before
  ``checkpoint.pt``, and ``metrics.csv`` after it from the checkpoint's own record), so resuming
  repeats the unfinished part exactly.

A run directory is guarded (:func:`ppl_vae.training.runs.open_run_dir`): locked against a second
process, and a directory that holds a run is refused unless resumed or overwritten (archived).
Every checkpoint records the run's ``run_id`` (kept across resumes) and its ``checkpoint_id``
(a content hash of the weights), which derived files quote.

Data-parallel training (inside a ``torch.distributed`` process group, see
:mod:`ppl_vae.training.distributed`): every rank builds the same epoch permutation, takes its
contiguous
shard of each global batch of ``batch_size`` points, and the ranks' gradients are combined into
the global batch's gradient before each Adam step. Rank r > 0 draws its Monte Carlo noise from
its own stream seeded from (seed, epoch, r); rank 0's stream is the single-process one. Only
rank 0 writes files; the checkpoint is the single-process one.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyro
import torch
from pyro.infer import Trace_ELBO
from tqdm.auto import tqdm

from ppl_vae.errors import CheckpointError, ConfigError, TrainingDivergedError
from ppl_vae.infer.objectives import make_objective
from ppl_vae.infer.svi import SVI
from ppl_vae.io.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint, weights_id
from ppl_vae.io.data import Dataset, load_dataset
from ppl_vae.poutine.handlers import ScaleLatents
from ppl_vae.training import distributed
from ppl_vae.training.builders import build_model_and_guide
from ppl_vae.training.config import TrainConfig
from ppl_vae.training.initialization import initialize_output_bias
from ppl_vae.training.runs import open_run_dir
from ppl_vae.training.schedules import learning_rate

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["train", "TrainResult", "build_objective", "estimate_elbo", "CHECKPOINT_NAME",
           "BEST_NAME", "best_epoch"]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
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
    best_epoch: int | None = None
    stopped_early: bool = False
    run_id: str | None = None
    checkpoint_id: str | None = None
    compiled: bool = False
    compile_seconds: float = 0.0
    compile_notice: str | None = None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"received signal {signum}")


class _DeferredStop:
    """SIGINT/SIGTERM handler of a single-process run: the first signal asks the loop to stop
    at its next consistent point; a second one raises ``KeyboardInterrupt`` at once."""

    def __init__(self):
        self.requested: int | None = None

    def __call__(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt(f"received signal {signum} again")
        self.requested = signum


def _rng_state() -> dict:
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss),
                       float(cached)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**31 - 1)


def _rank_seed(epoch_seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s noise in an epoch; rank 0 keeps the single-process seed."""
    return (int(epoch_seed) + 104_729 * int(rank)) % (2**31 - 1)


@torch.no_grad()
def estimate_elbo(model, guide, x, batch_size: int = 1000, seed: int = 0) -> float:
    """Mean per-point ELBO on ``x`` (one reparameterized sample per point, fixed seed).

    The global RNG state is saved and restored, so evaluation never perturbs training.
    """
    elbo = Trace_ELBO(num_particles=1)
    total = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, x.shape[0], batch_size):
            total -= elbo.loss(model, guide, x[i: i + batch_size])
    return total / x.shape[0]


def _write_metrics(rows: list[dict], path: Path):
    import pandas as pd

    df = pd.DataFrame(rows, columns=["epoch", "train_elbo", "valid_elbo", "seconds"])
    df["epoch"] = df["epoch"].astype(int)
    atomic_write_bytes(path, df.to_csv(index=False).encode())
    return df


def _payload(config, model, guide, svi, epochs_done, metrics, elapsed, x_dim,
             interrupted=False):
    best = best_epoch(metrics)
    return {
        "best_epoch": 0 if best is None else best,
        "config": config.to_dict(),
        "x_dim": int(x_dim),
        "model": model.state_dict(),
        "guide": guide.state_dict(),
        "objective_modules": {k: _initialized(m.state_dict())
                              for k, m in svi.objective.modules.items()},
        "objective_state": _objective_state(svi.objective),
        "optimizer": svi.state_dict(),
        "epochs_done": int(epochs_done),
        "metrics": [dict(r) for r in metrics],
        "elapsed": float(elapsed),
        "interrupted": bool(interrupted),
    }


def _initialized(state: dict) -> dict:
    """A state dict without the parameters of lazy layers never called (RELAX's control network
    on a pair without Bernoulli sites): they have no value to save, and stay lazy on load."""
    from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

    return {k: v for k, v in state.items()
            if not isinstance(v, (UninitializedParameter, UninitializedBuffer))}


def _objective_state(objective) -> dict:
    """What an objective keeps between steps outside its modules: the decaying-average
    baselines of ``score-avg``/``score-nn`` (``elbo.averages``), so a resumed run goes on with
    them instead of restarting them from zero; and the ``max_plate_nesting`` Pyro guessed (a
    guess runs the model and guide once, drawing random numbers: guessed again on resume, it
    would shift the resumed run's random stream)."""
    elbo = getattr(objective, "elbo", None)
    state = {}
    averages = getattr(elbo, "averages", None)
    if isinstance(averages, dict):
        state["averages"] = dict(averages)
    nesting = getattr(elbo, "max_plate_nesting", None)
    if isinstance(nesting, int):
        state["max_plate_nesting"] = int(nesting)
    return state


def _load_objective_state(objective, state: dict | None) -> None:
    elbo = getattr(objective, "elbo", None)
    state = state or {}
    averages = getattr(elbo, "averages", None)
    if isinstance(averages, dict) and "averages" in state:
        averages.clear()
        averages.update({k: v.clone() for k, v in state["averages"].items()})
    if elbo is not None and "max_plate_nesting" in state and hasattr(elbo, "max_plate_nesting"):
        elbo.max_plate_nesting = int(state["max_plate_nesting"])


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
            module.load_state_dict(payload["objective_modules"][name],
                                   strict=_initialized(module.state_dict()).keys()
                                   == module.state_dict().keys())


def _resolve_config(config, overrides: dict, resume: bool, ckpt_path):
    """``(config, payload)``: the run's :class:`TrainConfig` and, when resuming, the checkpoint."""
    if isinstance(config, TrainConfig):
        config = config.to_dict()
    requested = {**(config or {}), **overrides}
    if not resume:
        return TrainConfig.from_dict(requested), None
    if ckpt_path is None:
        raise ConfigError("resume=True needs the run directory (out)")
    payload = load_checkpoint(ckpt_path)
    saved = TrainConfig.from_dict(payload["config"])
    config = TrainConfig.from_dict({**saved.to_dict(), **requested})
    clash = {k: v for k, v in saved.differences(config).items() if k in TrainConfig.ARCHITECTURE}
    if clash:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}"
                           for k, (a, b) in clash.items())
        raise CheckpointError(f"{ckpt_path}: incompatible config ({detail})")
    return config, payload


def build_objective(config: TrainConfig, x_dim: int):
    """The run's :class:`~ppl_vae.infer.objectives.Objective`: ``config.objective`` with
    ``config.particles`` and ``config.options``."""
    return make_objective(config.objective, num_particles=config.particles, x_dim=x_dim,
                          **config.options)


@dataclass
class _Loop:
    """What one training run holds between epochs."""

    config: TrainConfig
    dataset: Dataset
    model: torch.nn.Module
    guide: torch.nn.Module
    svi: SVI
    anneal: ScaleLatents | None
    x_train: torch.Tensor
    x_valid: torch.Tensor
    binarize: bool
    batch_size: int
    steps_per_epoch: int
    sync: distributed.GradientSync | None = None
    run_id: str = ""
    saved: dict | None = None  # what the last checkpoint written holds (epochs, step, metrics)

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous shard of the global batch ``idx`` (all of it in one process);
        sets the rank's gradient weight. An empty shard computes on one point with weight 0."""
        if self.sync is None:
            return idx
        start, stop = distributed.shard_bounds(len(idx))
        self.sync.weight = (stop - start) / len(idx)
        return idx[start:stop] if stop > start else idx[:1]


COMPILE_MIN_STEPS = 5000  # "auto": capture and compile runs of at least this many steps


def _setup(config: TrainConfig, dataset: Dataset, device, compile=False) -> _Loop:
    """Model, guide, objective (KL warm-up handler if asked) and SVI for ``config``, with
    parameters and data on ``device``."""
    pyro.set_rng_seed(config.seed)
    model, guide = build_model_and_guide(config, dataset.x_dim)
    initialize_output_bias(config.weight_init, model, dataset.train)
    model.to(device), guide.to(device)
    objective = build_objective(config, dataset.x_dim)
    for module in objective.modules.values():
        module.to(device)
    anneal = ScaleLatents(1.0) if config.kl_warmup_epochs > 0 else None
    step_model, step_guide = (anneal(model), anneal(guide)) if anneal else (model, guide)
    svi = SVI(step_model, step_guide, objective, lr=config.lr, modules=(model, guide),
              eps=config.adam_eps, betas=tuple(config.adam_betas))
    likelihood = getattr(model, "likelihood", None)
    x_train = dataset.train.to(device)
    # grey data under a Bernoulli likelihood: a fresh binarization each minibatch
    binarize = bool(getattr(likelihood, "binary", False)) and not bool(
        ((x_train == 0) | (x_train == 1)).all())
    x_valid = dataset.split_for("valid", likelihood) if likelihood is not None else dataset.valid
    bs = min(config.batch_size, x_train.shape[0])
    from ppl_vae.infer.compiled import wants_compile

    svi.compile = wants_compile(compile, config.epochs * math.ceil(x_train.shape[0] / bs),
                                COMPILE_MIN_STEPS)
    sync = None
    if distributed.world_size() > 1:  # data parallel: start identical, average the gradients
        distributed.broadcast_modules(model, guide, *objective.modules.values())
        svi.grad_hook = sync = distributed.GradientSync()
    return _Loop(config, dataset, model, guide, svi, anneal, x_train, x_valid.to(device),
                 binarize, bs, math.ceil(x_train.shape[0] / bs), sync)


def _diverged(loss, epoch, step, loop: _Loop, metrics, ckpt_path) -> TrainingDivergedError:
    kept = (f"the last good checkpoint ({metrics[-1]['epoch'] if metrics else 0} epochs) is kept "
            f"at {ckpt_path}" if ckpt_path and ckpt_path.exists() else "no checkpoint was written")
    return TrainingDivergedError(
        f"loss became {loss} at epoch {epoch + 1}, step {step + 1} (global step "
        f"{epoch * loop.steps_per_epoch + step + 1}); {kept}; try a lower --lr")


def _train_epoch(loop: _Loop, epoch: int, bar, metrics, ckpt_path, position=None,
                 stop_at=None) -> float:
    """One pass over a fresh permutation of the training split; returns the epoch's mean
    training objective per data point. ``position`` (of an interrupted epoch's checkpoint):
    continue after its step with its RNG states and running sum. ``stop_at(step, running,
    seen)``: called after every step but the last while a stop is requested (it saves the
    position and raises ``KeyboardInterrupt``)."""
    config, x_train = loop.config, loop.x_train
    n, bs = x_train.shape[0], loop.batch_size
    seed = _epoch_seed(config.seed, epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    perm = perm.to(getattr(x_train, "device", "cpu"))  # Rows (dicts, datasets): CPU indices
    if position is None:
        pyro.set_rng_seed(_rank_seed(seed, distributed.rank()))
        first, running, seen = 0, 0.0, 0
    else:
        _set_rng_state(position["rng"])
        first, running, seen = (int(position["step"]), float(position["running"]),
                                int(position["seen"]))
    for step in range(first, loop.steps_per_epoch):
        idx = perm[step * bs: (step + 1) * bs]
        xb = x_train[loop.shard(idx)]
        if loop.binarize:
            xb = torch.bernoulli(xb)
        if loop.anneal is not None:
            loop.anneal.beta = min(1.0, (epoch * loop.steps_per_epoch + step + 1)
                                   / (config.kl_warmup_epochs * loop.steps_per_epoch))
            loop.svi.use_compiled = loop.anneal.beta >= 1.0  # the graph holds a fixed weight
        loss = loop.svi.step(xb, num_data=n)  # of the global batch (see GradientSync)
        if not math.isfinite(loss):
            raise _diverged(loss, epoch, step, loop, metrics, ckpt_path)
        running += loss * len(idx) / n
        seen += len(idx)
        bar.update(1)
        if step % 10 == 0 or step == loop.steps_per_epoch - 1:
            bar.set_postfix_str(f"epoch {epoch + 1}/{config.epochs} "
                                f"-elbo/pt {running / seen:.3f}", refresh=False)
        if stop_at is not None and step < loop.steps_per_epoch - 1:
            stop_at(step + 1, running, seen)
    return -running / seen


def _validate(loop: _Loop, epoch: int) -> float:
    loop.model.eval(), loop.guide.eval()
    valid_elbo = estimate_elbo(loop.model, loop.guide, loop.x_valid, seed=loop.config.seed)
    loop.model.train(), loop.guide.train()
    if not math.isfinite(valid_elbo):
        raise TrainingDivergedError(f"validation ELBO became {valid_elbo} after epoch {epoch + 1}")
    return valid_elbo


def _kept(loop: _Loop) -> str:
    """Which checkpoint is on disk, in words."""
    saved = loop.saved
    if saved is None:
        return "no checkpoint was written yet"
    where = f"{saved['epochs']} epochs"
    if saved.get("step"):
        where += f" and {saved['step']} of {loop.steps_per_epoch} steps"
    return f"{CHECKPOINT_NAME} ({where}) is kept and loadable"


def _save(loop: _Loop, run_dir, epochs_done, metrics, elapsed, position=None) -> None:
    """Write ``best.pt`` (when this epoch is the best), then ``checkpoint.pt``, then
    ``metrics.csv`` from the checkpoint's own record: interrupted anywhere, the files on disk
    agree, and resuming from ``checkpoint.pt`` repeats whatever is missing. ``position`` (an
    interrupted epoch): the steps done, running sum and RNG states, for an exact resume."""
    if run_dir is None or not distributed.is_main():
        return
    payload = _payload(loop.config, loop.model, loop.guide, loop.svi, epochs_done, metrics,
                       elapsed, loop.dataset.x_dim, interrupted=position is not None)
    payload.update(run_id=loop.run_id, position=position, checkpoint_id=weights_id(payload))
    target = run_dir / CHECKPOINT_NAME
    try:
        if position is None and metrics and payload["best_epoch"] == metrics[-1]["epoch"]:
            target = run_dir / BEST_NAME  # this epoch has the best valid ELBO
            save_checkpoint(target, payload)
        target = run_dir / CHECKPOINT_NAME
        save_checkpoint(target, payload)
        loop.saved = {"epochs": int(epochs_done), "step": (position or {}).get("step", 0),
                      "metrics": payload["metrics"], "checkpoint_id": payload["checkpoint_id"]}
        target = run_dir / METRICS_NAME
        _write_metrics(payload["metrics"], target)
    except OSError as exc:
        raise _unwritable(target, exc, loop) from None


def _unwritable(path, exc: OSError, loop: _Loop) -> CheckpointError:
    reason = f"{exc.strerror or exc} [errno {exc.errno}]" if exc.errno else str(exc)
    return CheckpointError(f"cannot write {path}: {reason}; {_kept(loop)}; free space or fix "
                           "the permissions, then continue with --resume")


def _load_data(config: TrainConfig) -> Dataset:
    """The run's data set; in a process group rank 0 loads it first (a download happens once,
    and a data error reaches every rank), then the others."""
    first = {}

    def load():
        first["dataset"] = load_dataset(config.data, likelihood=config.likelihood_spec())

    distributed.from_rank0(load)
    if "dataset" in first:
        return first["dataset"]
    return load_dataset(config.data, likelihood=config.likelihood_spec())


def _start(config, overrides, resume, run_dir, dataset, device, compile=False):
    """``(loop, start_epoch, metrics, elapsed, position)``: the set-up run, resumed from its
    checkpoint if asked (read by rank 0 and sent to every rank)."""
    ckpt_path = run_dir / CHECKPOINT_NAME if run_dir is not None else None
    config, payload = distributed.from_rank0(_resolve_config, config, overrides, resume, ckpt_path)
    dataset = _load_data(config) if dataset is None else dataset
    loop = _setup(config, dataset, torch.device(device), compile)
    if payload is None:
        loop.run_id = uuid.uuid4().hex[:12]
        return loop, 0, [], 0.0, None
    load_state(loop.model, loop.guide, payload, str(ckpt_path), loop.svi.objective.modules)
    loop.svi.load_state_dict(payload.get("optimizer", {}))
    _load_objective_state(loop.svi.objective, payload.get("objective_state"))
    loop.run_id = str(payload.get("run_id") or uuid.uuid4().hex[:12])
    epochs = int(payload.get("epochs_done", 0))
    position = payload.get("position")
    loop.saved = {"epochs": epochs, "step": (position or {}).get("step", 0),
                  "metrics": list(payload.get("metrics", [])),
                  "checkpoint_id": payload.get("checkpoint_id")}
    return (loop, epochs, list(payload.get("metrics", [])), float(payload.get("elapsed", 0.0)),
            position)


def best_epoch(metrics) -> int | None:
    """The (1-based) epoch with the highest validation ELBO (the first of ties), or None."""
    best = None
    for row in metrics:
        v = row["valid_elbo"]
        if math.isfinite(v) and (best is None or v > best[1]):
            best = (int(row["epoch"]), v)
    return None if best is None else best[0]


def _patience_exhausted(config: TrainConfig, metrics) -> bool:
    """Early stopping: ``patience`` epochs without a better validation ELBO, counted from the
    later of the best epoch and the end of the KL warm-up (the bound is still moving then)."""
    best = best_epoch(metrics)
    if config.patience <= 0 or best is None:
        return False
    since = int(metrics[-1]["epoch"]) - max(best, config.kl_warmup_epochs)
    return since >= config.patience


def _set_epoch_lr(loop: _Loop, epoch: int) -> None:
    """The learning rate of ``epoch`` under ``config.schedule``
    (see :mod:`ppl_vae.training.schedules`)."""
    loop.svi.set_lr(learning_rate(loop.config.schedule, epoch, loop.config.lr))


def train(config: TrainConfig | dict | None = None, out=None, *, resume: bool = False,
          overwrite: bool = False, progress: bool = True, dataset: Dataset | None = None,
          callbacks=(), device="cpu", compile="auto", **overrides) -> TrainResult:
    """Train the model/guide pair described by ``config`` (keyword ``overrides`` win).

    ``out``: a run directory receiving ``checkpoint.pt`` (atomic, after every epoch: the last
    state, for resuming), ``best.pt`` (the same payload, rewritten whenever the validation ELBO
    improves; ``best_epoch`` in both), ``metrics.csv`` and ``config.json``. ``callbacks``:
    :class:`~ppl_vae.training.callbacks.Callback` objects (the figures and active units that
    ``ppl-vae train`` and :func:`ppl_vae.train` write are
    :class:`ppl_vae.analysis.reports.RunReport`).
    ``out`` is locked while training (``out/.lock``: a second process is refused), and a
    directory that already holds a run is refused (:class:`~ppl_vae.training.runs.RunExistsError`)
    unless ``resume=True`` continues from ``out/checkpoint.pt`` (the checkpoint's config is used;
    an explicitly different architecture is an error; ``epochs`` may be raised) or
    ``overwrite=True`` first archives everything in it into ``out/.old-<timestamp>/``.
    ``config.patience`` > 0 stops early (see :func:`_patience_exhausted`); ``config.schedule``
    sets the learning rate of each epoch; ``config.adam_eps``/``adam_betas`` go to Adam.

    On a NaN/inf loss, raises :class:`TrainingDivergedError` naming the epoch and step; the last
    checkpoint (end of the last good epoch) is left untouched. A checkpoint that cannot be
    written (disk full, read-only directory) raises :class:`CheckpointError` saying that the
    previous one is kept. On Ctrl-C or SIGTERM, stops at the next consistent point, saves and
    raises ``KeyboardInterrupt`` whose message says what is on disk (see the module docstring;
    in a process group of several ranks it saves nothing: the last epoch's checkpoint stays).
    ``device``: where parameters and data live (checkpoints are loaded to the CPU and moved
    there). ``compile``: run the training step as a captured, ``torch.compile`` d tensor program
    (:class:`~ppl_vae.infer.compiled.CompiledStep`; the result's ``compiled``,
    ``compile_seconds`` and ``compile_notice`` report it): True, False, or ``"auto"`` (runs of
    at least :data:`COMPILE_MIN_STEPS` steps). Its random draws come from Inductor's generator,
    so a compiled run is not bit-identical to a generic run with the same seed.

    Inside a ``torch.distributed`` process group this is one rank of a data-parallel run (see
    the module docstring); every rank calls it with the same arguments, rank 0 writes the files.
    """
    run_dir = Path(out) if out is not None else None
    main = distributed.is_main()
    lock = {}
    if run_dir is not None:
        def guard():
            lock["held"] = open_run_dir(run_dir, resume=resume, overwrite=overwrite)

        distributed.from_rank0(guard)
    try:
        return _train(config, run_dir, resume, progress, dataset, callbacks, device, overrides,
                      main, compile)
    finally:
        if "held" in lock:
            lock["held"].release()


def _train(config, run_dir, resume, progress, dataset, callbacks, device, overrides, main,
           compile=False):
    ckpt_path = run_dir / CHECKPOINT_NAME if run_dir is not None else None
    loop, start_epoch, metrics, elapsed, position = _start(config, overrides, resume, run_dir,
                                                           dataset, device, compile)
    config, dataset = loop.config, loop.dataset
    if run_dir is not None and main:
        try:
            atomic_write_bytes(run_dir / "config.json",
                               json.dumps(config.to_dict(), indent=2).encode())
        except OSError as exc:
            raise _unwritable(run_dir / "config.json", exc, loop) from None

    done = int((position or {}).get("step", 0)) if start_epoch < config.epochs else 0
    bar = tqdm(total=max(0, (config.epochs - start_epoch) * loop.steps_per_epoch - done),
               disable=not (progress and main), desc="train", unit="step", dynamic_ncols=True,
               leave=True)
    epoch, stopped_early = start_epoch, False
    # Ctrl-C and SIGTERM (a scheduler or `kill`): in one process, deferred to the next
    # consistent point (_DeferredStop); in a process group, SIGTERM raises like Ctrl-C.
    in_main = threading.current_thread() is threading.main_thread()
    stop = _DeferredStop() if in_main and loop.sync is None else None
    old = {}
    if in_main:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if stop is not None or signum == signal.SIGTERM:
                old[signum] = signal.signal(signum, stop or _raise_interrupt)

    def stop_at(step, running, seen, epoch_t0, epoch_seconds):
        if stop is None or stop.requested is None:
            return
        pos = {"step": step, "running": running, "seen": seen, "rng": _rng_state(),
               "seconds": epoch_seconds + time.perf_counter() - epoch_t0}
        _save(loop, run_dir, epoch, metrics, elapsed + pos["seconds"], position=pos)
        raise KeyboardInterrupt(f"signal {stop.requested}")

    try:
        for epoch in range(start_epoch, config.epochs):
            distributed.failure_test_hook(epoch + 1)
            if _patience_exhausted(config, metrics):
                stopped_early = True
                break
            _set_epoch_lr(loop, epoch)
            resume_at = position if epoch == start_epoch else None
            t0, before = time.perf_counter(), float((resume_at or {}).get("seconds", 0.0))
            train_elbo = _train_epoch(
                loop, epoch, bar, metrics, ckpt_path, position=resume_at,
                stop_at=None if stop is None else
                (lambda step, running, seen: stop_at(step, running, seen, t0, before)))
            valid_elbo = _validate(loop, epoch)
            seconds = before + time.perf_counter() - t0
            elapsed += seconds
            metrics.append({"epoch": epoch + 1, "train_elbo": train_elbo,
                            "valid_elbo": valid_elbo, "seconds": seconds})
            bar.set_postfix_str(f"epoch {epoch + 1}/{config.epochs} train {train_elbo:.3f} "
                                f"valid {valid_elbo:.3f}")
            _save(loop, run_dir, epoch + 1, metrics, elapsed)
            if main:
                for callback in callbacks:
                    callback.on_epoch_end(epoch + 1, metrics[-1], loop.model, loop.guide)
            distributed.barrier()  # no rank starts epoch e + 1 before epoch e's checkpoint exists
            if stop is not None and stop.requested is not None and epoch + 1 < config.epochs:
                raise KeyboardInterrupt(f"signal {stop.requested}")
    except KeyboardInterrupt:
        bar.close()
        if run_dir is not None and main and loop.saved is not None:
            try:  # metrics.csv agrees with the checkpoint on disk, whenever the interrupt came
                _write_metrics(loop.saved["metrics"], run_dir / METRICS_NAME)
            except OSError:
                pass
        if run_dir is None or not main:
            raise
        raise KeyboardInterrupt(_kept(loop)) from None
    finally:
        bar.close()
        for signum, handler in old.items():
            signal.signal(signum, handler)

    if run_dir is not None and main:
        df = _write_metrics(metrics, run_dir / METRICS_NAME)
    else:
        import pandas as pd

        df = pd.DataFrame(metrics, columns=["epoch", "train_elbo", "valid_elbo", "seconds"])
    result = TrainResult(loop.model, loop.guide, config, df, dataset, run_dir,
                         best_epoch=best_epoch(metrics), stopped_early=stopped_early,
                         run_id=loop.run_id,
                         checkpoint_id=(loop.saved or {}).get("checkpoint_id"),
                         compiled=loop.svi.compiled is not None and loop.svi.compile,
                         compile_seconds=getattr(loop.svi.compiled, "compile_seconds", 0.0),
                         compile_notice=loop.svi.compile_notice)
    if main:
        for callback in callbacks:
            callback.on_train_end(result)
    return result
