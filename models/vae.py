"""The one-latent-layer VAE generative model as a Pyro model.

    z ~ N(0, I_J)                      site "z"  (event dim 1)
    x | z ~ p(x | f_theta(z))          site "x"  (event dim 1, observed)

both inside ``pyro.plate("data")`` (dim -1). Kingma & Welling (2014), "Auto-Encoding Variational
Bayes"; Rezende et al. (2014).
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ppl_vae.models.likelihoods import make_likelihood
from ppl_vae.nn import MLP
from ppl_vae.poutine.plates import data_plate

__all__ = ["VAEModel"]


class VAEModel(PyroModule):
    """Pyro model p(z) p(x|z) with a standard-normal prior and an MLP decoder.

    Call as ``model(x, num_data=None)``. With ``x=None`` pass ``batch_size`` to sample from the
    generative model. ``num_data`` is the full data-set size during minibatch training (the data
    plate then rescales the minibatch log-density, see :mod:`ppl_vae.poutine.plates`).

    Sites: latent ``"z"`` of shape ``(batch, latent_dim)``; observed ``"x"`` of shape
    ``(batch, x_dim)``.
    """

    def __init__(
        self,
        x_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (256, 256),
        likelihood="bernoulli",
        activation: str = "relu",
    ):
        super().__init__()
        self.x_dim = int(x_dim)
        self.latent_dim = int(latent_dim)
        self.likelihood = make_likelihood(likelihood)
        self.decoder = MLP(
            [self.latent_dim, *hidden, self.likelihood.num_params * self.x_dim], activation
        )
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def prior(self) -> dist.TorchDistribution:
        """p(z) = N(0, I) over one data point."""
        zero = self._zero
        return dist.Normal(zero, zero + 1.0).expand([self.latent_dim]).to_event(1)

    def forward(self, x=None, num_data=None, batch_size=None):
        n = x.shape[0] if x is not None else int(batch_size or 1)
        with data_plate(n, num_data, device=self._zero.device):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)
