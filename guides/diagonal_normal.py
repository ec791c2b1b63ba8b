"""Amortized diagonal-Gaussian guide q(z|x) = N(mu_phi(x), diag sigma_phi(x)^2).

Sampling uses the reparameterization trick z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling
2014; Rezende et al. 2014), so ``Trace_ELBO`` gets pathwise gradients. sigma = softplus(.) + 1e-5.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule

from ppl_vae.nn import MLP
from ppl_vae.poutine.plates import data_plate

__all__ = ["DiagonalNormalGuide"]


class DiagonalNormalGuide(PyroModule):
    """Pyro guide for the latent site ``"z"`` of :class:`ppl_vae.models.VAEModel`.

    Call as ``guide(x, num_data=None)`` with the same arguments as the model.
    """

    min_scale = 1e-5

    def __init__(
        self,
        x_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        site: str = "z",
    ):
        super().__init__()
        self.x_dim = int(x_dim)
        self.latent_dim = int(latent_dim)
        self.site = site
        self.encoder = MLP([self.x_dim, *hidden, 2 * self.latent_dim], activation)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The variational parameters (mu(x), sigma(x)), each of shape ``(..., latent_dim)``."""
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale

    def forward(self, x, num_data=None, **kwargs):
        loc, scale = self.encode(x)
        with data_plate(x.shape[0], num_data, device=x.device):
            return pyro.sample(self.site, dist.Normal(loc, scale).to_event(1))
