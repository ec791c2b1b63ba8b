"""Load a trained run (a directory written by ``ppl-vae train``) back into Python."""

from __future__ import annotations

import errno
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ppl_vae.errors import CheckpointError, ConfigError, PplVaeError, PplVaeWarning
from ppl_vae.io.checkpoint import checkpoint_id, load_checkpoint
from ppl_vae.io.data import Dataset, load_dataset
from ppl_vae.training.builders import build_model_and_guide
from ppl_vae.training.config import TrainConfig

__all__ = ["Run", "load_run", "checkpoint_path", "CHECKPOINTS", "RunExistsError", "RunLockedError",
           "RunLock", "open_run_dir", "holds_run", "archive_run", "LOCK_NAME"]

LOCK_NAME = ".lock"
# files whose presence makes a directory a run: the model's checkpoints and what was measured
RUN_MARKERS = ("checkpoint.pt", "best.pt", "metrics.csv", "evaluation.csv")


class RunExistsError(ConfigError):
    """``train`` into a directory that already holds a run, without resume or overwrite."""


class RunLockedError(ConfigError):
    """Another live process is training into the run directory."""


def holds_run(run_dir) -> bool:
    """Whether ``run_dir`` holds (part of) a run: a checkpoint, metrics or evaluations."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in RUN_MARKERS)


def _describe(run_dir: Path) -> str:
    try:
        epochs = max(0, len((run_dir / "metrics.csv").read_text().strip().splitlines()) - 1)
        return f"{epochs} epoch{'s' * (epochs != 1)} in metrics.csv"
    except OSError:
        return ", ".join(n for n in RUN_MARKERS if (run_dir / n).exists())


def archive_run(run_dir) -> Path | None:
    """Move everything in ``run_dir`` (but the lock and earlier archives) into
    ``run_dir/.old-<timestamp>/``, so that nothing derived from the old model is mistaken for
    the new one's; returns the archive (None when there was nothing to move)."""
    run_dir = Path(run_dir)
    entries = [p for p in run_dir.iterdir()
               if p.name != LOCK_NAME and not p.name.startswith(".old-")]
    if not entries:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    archive, n = run_dir / f".old-{stamp}", 1
    while archive.exists():
        n += 1
        archive = run_dir / f".old-{stamp}-{n}"
    archive.mkdir()
    for p in entries:
        os.replace(p, archive / p.name)
    return archive


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory: ``DIR/.lock`` holds the owner's pid, locked with
    ``fcntl.flock`` (released by the kernel when the owner dies, so a stale lock of a killed
    process is taken over); where flock is missing, an ``O_EXCL`` pid file whose dead owner's
    lock is taken over."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def _busy(self) -> RunLockedError:
        try:
            pid = self.path.read_text().strip() or "?"
        except OSError:
            pid = "?"
        return RunLockedError(f"{self.path.parent} is in use: another process (pid {pid}) is "
                              f"training into it ({self.path}); wait for it, or use another --out")

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            return self._acquire_exclusive()
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise self._busy() from None
                return self._acquire_exclusive()  # a file system without flock
            try:  # the file we locked may have been unlinked by its releasing owner meanwhile
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)
        raise self._busy()

    def _acquire_exclusive(self) -> RunLock:  # pragma: no cover - exercised without flock only
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip())
                except (OSError, ValueError):
                    pid = -1
                if pid > 0 and _pid_alive(pid):
                    raise self._busy() from None
                self.path.unlink(missing_ok=True)  # a dead owner's stale lock: take it over
                continue
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return self
        raise self._busy()

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def open_run_dir(run_dir, *, resume: bool = False, overwrite: bool = False) -> RunLock:
    """Create ``run_dir``, lock it (:class:`RunLock`) and guard it: a directory that holds a run
    is refused (:class:`RunExistsError`) unless ``resume`` (continue it) or ``overwrite``
    (archive it with :func:`archive_run`). Returns the held lock."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire()
    for tmp in run_dir.glob(".*.tmp"):  # a killed writer's temporary file (we hold the lock)
        tmp.unlink(missing_ok=True)
    try:
        if not resume and holds_run(run_dir):
            if not overwrite:
                raise RunExistsError(
                    f"{run_dir} already holds a run ({_describe(run_dir)}); use --resume, "
                    "--overwrite, or another --out")
            archive_run(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock



@dataclass
class Run:
    """A trained model/guide pair with its config; ``split(name)`` gives evaluation data."""

    model: torch.nn.Module
    guide: torch.nn.Module
    config: TrainConfig
    run_dir: Path
    checkpoint: dict = field(repr=False)
    _dataset: Dataset | None = field(default=None, repr=False)
    path: Path | None = None

    @property
    def run_id(self) -> str | None:
        """The id of the training run (kept across resumes; None for an old checkpoint)."""
        return self.checkpoint.get("run_id")

    @property
    def checkpoint_id(self) -> str:
        """A short content hash of the loaded weights (:func:`ppl_vae.io.checkpoint.weights_id`)."""
        return checkpoint_id(self.checkpoint)

    def provenance(self) -> dict:
        """What a derived file records about its source: run, run id, checkpoint file and id,
        epochs done."""
        return {"run": str(self.run_dir), "run_id": self.run_id,
                "checkpoint": self.path.name if self.path else None,
                "checkpoint_id": self.checkpoint_id,
                "epochs_done": int(self.checkpoint.get("epochs_done", 0))}

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_dataset(self.config.data, likelihood=self.config.likelihood_spec())
        return self._dataset

    def split(self, name: str = "test") -> torch.Tensor:
        """The split as the likelihood sees it at evaluation (statically binarized if needed)."""
        return self.dataset.split_for(name, getattr(self.model, "likelihood", None))


CHECKPOINTS = ("best", "last")


def checkpoint_path(run_dir, checkpoint: str = "best") -> Path:
    """The checkpoint file of a run: ``best`` is ``best.pt`` (the epoch with the best validation
    ELBO) where the run has one, else ``checkpoint.pt``; ``last`` is ``checkpoint.pt``. A path
    to a file is returned as it is."""
    from ppl_vae.training.loop import BEST_NAME, CHECKPOINT_NAME

    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return run_dir
    if checkpoint == "best" and (run_dir / BEST_NAME).is_file():
        return run_dir / BEST_NAME
    return run_dir / CHECKPOINT_NAME


def load_run(run_dir, map_location="cpu", dataset: Dataset | None = None,
             checkpoint: str = "best") -> Run:
    """Rebuild model and guide from one checkpoint of ``run_dir`` alone (no other flags needed):
    ``checkpoint="best"`` (default; ``best.pt`` where it exists, else ``checkpoint.pt``) or
    ``"last"`` (``checkpoint.pt``); see :func:`checkpoint_path`."""
    from ppl_vae.training.loop import load_state

    if not Path(run_dir).exists():
        raise CheckpointError(f"{run_dir}: no such run directory")
    path = checkpoint_path(run_dir, checkpoint)
    try:
        payload = load_checkpoint(path, map_location=map_location)
    except CheckpointError as exc:
        last = path.parent / "checkpoint.pt"
        if checkpoint != "best" or path.name != "best.pt" or not last.is_file():
            raise
        warnings.warn(f"{exc}; using {last.name} (the last epoch) instead", PplVaeWarning,
                      stacklevel=2)
        path, payload = last, load_checkpoint(last, map_location=map_location)
    try:
        config = TrainConfig.from_dict(payload["config"])
    except (PplVaeError, TypeError) as exc:
        raise CheckpointError(f"{path}: its config cannot be read ({exc})") from exc
    x_dim = _x_dim(payload) if dataset is None else dataset.x_dim
    model, guide = build_model_and_guide(config, x_dim)
    load_state(model, guide, payload, str(path))
    model.eval(), guide.eval()
    return Run(model, guide, config, path.parent, payload, dataset, path)


def _x_dim(payload) -> int:
    x_dim = payload.get("x_dim")
    if x_dim is None:
        raise CheckpointError("checkpoint does not record the data dimension (x_dim)")
    return int(x_dim)
