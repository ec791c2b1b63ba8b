"""Load a trained run (a directory written by ``ppl-vae train``) back into Python."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ppl_vae.errors import CheckpointError, ConfigError, PplVaeError
from ppl_vae.io.checkpoint import load_checkpoint
from ppl_vae.io.data import Dataset, load_dataset
from ppl_vae.training.builders import build_model_and_guide
from ppl_vae.training.config import TrainConfig

__all__ = ["Run", "load_run", "checkpoint_path", "CHECKPOINTS"]


@dataclass
class Run:
    """A trained model/guide pair with its config; ``split(name)`` gives evaluation data."""

    model: torch.nn.Module
    guide: torch.nn.Module
    config: TrainConfig
    run_dir: Path
    checkpoint: dict = field(repr=False)
    _dataset: Dataset | None = field(default=None, repr=False)

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

    path = checkpoint_path(run_dir, checkpoint)
    payload = load_checkpoint(path, map_location=map_location)
    try:
        config = TrainConfig.from_dict(payload["config"])
    except (PplVaeError, TypeError) as exc:
        raise CheckpointError(f"{path}: its config cannot be read ({exc})") from exc
    x_dim = _x_dim(payload) if dataset is None else dataset.x_dim
    model, guide = build_model_and_guide(config, x_dim)
    load_state(model, guide, payload, str(path))
    model.eval(), guide.eval()
    return Run(model, guide, config, path.parent, payload, dataset)


def _x_dim(payload) -> int:
    x_dim = payload.get("x_dim")
    if x_dim is None:
        raise CheckpointError("checkpoint does not record the data dimension (x_dim)")
    return int(x_dim)
