"""The data plate shared by every model and guide in ppl_vae.

All of our models and guides put the data points in ``pyro.plate("data", ...)`` at ``dim=-1``.
During minibatch training the plate is told the full data-set size ``num_data``; Pyro then scales
every log-density inside it by ``num_data / batch_size``, so the minibatch loss is an unbiased
estimate of the full-data ELBO (Hoffman et al. 2013, stochastic variational inference).
"""

from __future__ import annotations

import pyro
import torch

__all__ = ["DATA_PLATE", "data_plate"]

DATA_PLATE = "data"


def data_plate(batch_size: int, num_data: int | None = None, device=None) -> pyro.plate:
    """``pyro.plate("data")`` over ``batch_size`` points standing for ``num_data`` points."""
    if num_data is None or int(num_data) == int(batch_size):
        return pyro.plate(DATA_PLATE, batch_size, dim=-1)
    # The indices themselves are never used (the caller already holds the minibatch); passing
    # them avoids a `_Subsample` sample site and a randperm over the full data set every step.
    idx = torch.arange(batch_size, device=device)
    return pyro.plate(DATA_PLATE, int(num_data), subsample=idx, dim=-1)
