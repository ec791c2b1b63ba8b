"""The end-of-run report of a training run: samples, reconstructions and active units.

:class:`RunReport` is the :class:`~ppl_vae.training.callbacks.Callback` that ``ppl-vae train``
attaches; :func:`train` is :func:`ppl_vae.training.loop.train` with it attached (the public
``ppl_vae.train``), so the CLI and Python write the same files.
"""

from __future__ import annotations

import torch

from ppl_vae.analysis.active_units import ActiveUnits, report_active_units
from ppl_vae.analysis.generation import reconstruct, sample_images
from ppl_vae.errors import ConfigError
from ppl_vae.training.callbacks import Callback

__all__ = ["RunReport", "train", "save_run_figures"]


def save_run_figures(model, guide, dataset, run_dir, seed: int = 0) -> None:
    """``run_dir/samples.png`` (E[x|z], z ~ p(z); skipped for a model without a proper prior)
    and ``run_dir/reconstructions.png`` (16 validation points above their reconstructions)."""
    from ppl_vae.io.plots import save_image_grid

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            imgs = sample_images(model, 64)
            save_image_grid(imgs, dataset.image_shape, run_dir / "samples.png", ncol=8,
                            title="E[x|z], z ~ p(z)")
        except ConfigError:
            pass  # no proper prior to sample (an autoencoder): no samples.png
        x = dataset.split_for("valid", getattr(model, "likelihood", None))[:16]
        rec = reconstruct(model, guide, x)
        save_image_grid(torch.cat([x, rec]), dataset.image_shape,
                        run_dir / "reconstructions.png", ncol=16, row_labels=["data", "recon"],
                        title="valid split: data and E[x | z = E_q[z|x]] (last epoch)")


class RunReport(Callback):
    """At the end of a run with a run directory: :func:`save_run_figures` and
    ``active_units.csv`` (:func:`~ppl_vae.analysis.active_units.report_active_units`, validation
    split). The active units are kept in :attr:`active_units`."""

    def __init__(self, figures: bool = True, active_units: bool = True):
        self.figures, self.report_units = figures, active_units
        self.active_units: ActiveUnits | None = None

    def on_train_end(self, result) -> None:
        if result.run_dir is None or not len(result.metrics):
            return
        from ppl_vae.io.provenance import declared

        source = {"run": str(result.run_dir), "run_id": result.run_id,
                  "checkpoint": "checkpoint.pt", "checkpoint_id": result.checkpoint_id,
                  "epochs_done": int(result.metrics.epoch.iloc[-1])}
        with declared(source):
            self._report(result)

    def _report(self, result) -> None:
        if self.figures:
            save_run_figures(result.model, result.guide, result.dataset, result.run_dir,
                             result.config.seed)
        if self.report_units:
            self.active_units = report_active_units(result.model, result.guide, result.dataset,
                                                    result.run_dir, seed=result.config.seed)


def train(config=None, out=None, *, reports: bool = True, callbacks=(), **kwargs):
    """:func:`ppl_vae.training.loop.train` with a :class:`RunReport` attached (unless
    ``reports=False``): the figures and ``active_units.csv`` that ``ppl-vae train`` writes."""
    from ppl_vae.training.loop import train as train_loop

    callbacks = [*callbacks, RunReport()] if reports else list(callbacks)
    return train_loop(config, out, callbacks=callbacks, **kwargs)
