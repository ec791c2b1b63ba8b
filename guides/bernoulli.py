"""Amortized factorized Bernoulli guide q(z|x) = prod_j Bernoulli(z_j; sigmoid(g_phi(x)_j)).

The guide of the sigmoid belief network (:class:`ppl_vae.models.SigmoidBeliefNetwork`; Mnih &
Gregor 2014). Its samples are discrete, so ``has_rsample`` is False and every Pyro ELBO uses the
score function for it.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ppl_vae.nn import MLP
from ppl_vae.poutine.plates import data_plate

__all__ = ["BernoulliGuide"]


class BernoulliGuide(PyroModule):
    """Pyro guide for a latent site (default ``"z"``) of Bernoulli variables.

    Call as ``guide(x, num_data=None)`` with the same arguments as the model. ``hidden=()`` gives
    the affine (logistic-regression) encoder of the one-layer SBN benchmarks.
    """

    def __init__(
        self,
        x_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        site: str = "z",
    ):
        super().__init__()
        self.x_dim = int(x_dim)
        self.latent_dim = int(latent_dim)
        self.site = site
        self.encoder = MLP([self.x_dim, *hidden, self.latent_dim], activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of q(z_j = 1 | x), shape ``(..., latent_dim)``."""
        return self.encoder(x)

    def forward(self, x, num_data=None, **kwargs):
        logits = self.encode(x)
        with data_plate(x.shape[0], num_data, device=x.device):
            return pyro.sample(self.site, dist.Bernoulli(logits=logits).to_event(1))
