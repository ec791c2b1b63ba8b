"""A sigmoid belief network (Neal 1992) as a Pyro model: discrete latents, no reparameterization.

    z_j ~ Bernoulli(sigmoid(b_j)),  j = 1..J      site "z"  (event dim 1; learned prior logits b)
    x | z ~ Bernoulli(sigmoid(f_theta(z)))        site "x"  (event dim 1, observed)

both inside ``pyro.plate("data")`` (dim -1). With ``hidden=()`` f_theta is affine, W z + c: the
one-layer SBN used as a benchmark for score-function estimators by Mnih & Gregor (2014, "Neural
Variational Inference and Learning in Belief Networks", NVIL) and Mnih & Rezende (2016, VIMCO);
with hidden layers f_theta is an MLP (deterministic hidden units). Because z is discrete there is
no pathwise gradient: only score-function estimators (with baselines) and reweighted wake-sleep
apply.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_vae.models.likelihoods import BernoulliLikelihood
from ppl_vae.nn import MLP
from ppl_vae.poutine.plates import data_plate

__all__ = ["SigmoidBeliefNetwork"]


class SigmoidBeliefNetwork(PyroModule):
    """Pyro model p(z) p(x|z) with factorized Bernoulli latents and a Bernoulli decoder.

    Call as ``model(x, num_data=None)`` (``x=None`` with ``batch_size`` samples from the model),
    like :class:`~ppl_vae.models.VAEModel`. Sites: latent ``"z"`` of shape
    ``(batch, latent_dim)`` with values in {0, 1}; observed ``"x"`` of shape ``(batch, x_dim)``.
    """

    def __init__(
        self,
        x_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
    ):
        super().__init__()
        self.x_dim = int(x_dim)
        self.latent_dim = int(latent_dim)
        self.likelihood = BernoulliLikelihood()
        self.prior_logits = nn.Parameter(torch.zeros(self.latent_dim))
        self.decoder = MLP([self.latent_dim, *hidden, self.x_dim], activation)

    def prior(self) -> dist.TorchDistribution:
        """p(z) = prod_j Bernoulli(z_j; sigmoid(b_j)) over one data point."""
        return dist.Bernoulli(logits=self.prior_logits).to_event(1)

    def forward(self, x=None, num_data=None, batch_size=None):
        n = x.shape[0] if x is not None else int(batch_size or 1)
        with data_plate(n, num_data, device=self.prior_logits.device):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)
