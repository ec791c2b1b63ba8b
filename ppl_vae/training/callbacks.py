"""Callbacks: what a caller attaches to :func:`ppl_vae.training.loop.train`.

The training loop itself writes only what resuming needs (checkpoints, metrics, config); figures,
reports and loggers are callbacks, so the loop depends on nothing above it (the end-of-run
figures and active units live in :mod:`ppl_vae.analysis.reports`).
"""

from __future__ import annotations

__all__ = ["Callback"]


class Callback:
    """Base class: override the hooks you need; every hook runs on the main rank only.

    * ``on_epoch_end(epoch, row, model, guide)``: after epoch ``epoch`` (1-based) is
      checkpointed; ``row`` is its metrics row (``epoch``, ``train_elbo``, ``valid_elbo``,
      ``seconds``).
    * ``on_train_end(result)``: once, with the :class:`~ppl_vae.training.loop.TrainResult`, after
      ``metrics.csv`` is written (not on an interrupted or diverged run).
    """

    def on_epoch_end(self, epoch: int, row: dict, model, guide) -> None:
        pass

    def on_train_end(self, result) -> None:
        pass
