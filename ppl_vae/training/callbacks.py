"""Callbacks: what a caller attaches to :func:`ppl_vae.training.loop.train`.

The training loop itself writes only what resuming needs (checkpoints, metrics, config); figures,
reports and loggers are callbacks, so the loop depends on nothing above it (the end-of-run
figures and active units live in :mod:`ppl_vae.analysis.reports`).
"""

from __future__ import annotations

__all__ = ["Callback", "TensorBoard"]


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


class TensorBoard(Callback):
    """Write each epoch's metrics row (``train_elbo``, ``valid_elbo``, ``seconds``) as scalars
    to a TensorBoard log directory, via :class:`torch.utils.tensorboard.SummaryWriter`.

    Needs the optional ``tensorboard`` package (``pip install -e ".[tensorboard]"``); without
    it, creating the callback raises one clear :class:`~ppl_vae.errors.ConfigError`.

    :param log_dir: the directory TensorBoard reads (``tensorboard --logdir DIR``).

    Example::

        ppl_vae.fit(model, guide, data, out="runs/mine", callbacks=[TensorBoard("runs/tb")])
    """

    def __init__(self, log_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from ppl_vae.errors import ConfigError

            raise ConfigError("the TensorBoard callback needs the tensorboard package: "
                              'pip install -e ".[tensorboard]"') from None
        self.writer = SummaryWriter(str(log_dir))

    def on_epoch_end(self, epoch: int, row: dict, model, guide) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def on_train_end(self, result) -> None:
        self.writer.close()
