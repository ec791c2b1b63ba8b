"""Point-mass guides: the encoders of the deterministic and the denoising autoencoder.

:class:`PointGuide` q(z|x) = Delta(f(x)) (``dist.Delta(..., event_dim=1)``, reparameterized: the
gradient flows through f). Its log-density at its own value is 0, so with
:class:`~ppl_vae.models.AutoencoderModel` the ELBO is the reconstruction log-likelihood.

:class:`DenoisingPointGuide` (Vincent et al. 2008) encodes a *corrupted* copy x̃ ~ C(x̃ | x)
while training (``self.training``; evaluation encodes x itself) and the model reconstructs the
clean x: the objective is E_C[log p(x | z = f(x̃))]. Corruptions: ``masking`` (each input set to
0 with probability ``noise``) or ``gaussian`` (x + noise * N(0, 1)).
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ppl_vae.errors import ConfigError
from ppl_vae.nn import MLP
from ppl_vae.poutine.plates import data_plate

__all__ = ["PointGuide", "DenoisingPointGuide", "NOISE_TYPES", "corrupt"]

NOISE_TYPES = ("masking", "gaussian")


def corrupt(x: torch.Tensor, noise: float, noise_type: str = "masking") -> torch.Tensor:
    """A corrupted copy of ``x``: masking noise (zero each entry with probability ``noise``) or
    additive Gaussian noise of standard deviation ``noise``."""
    if noise_type == "masking":
        return x * (torch.rand_like(x) >= noise).to(x.dtype)
    if noise_type == "gaussian":
        return x + noise * torch.randn_like(x)
    raise ConfigError(f"unknown noise type {noise_type!r}; choose one of {', '.join(NOISE_TYPES)}")


class PointGuide(PyroModule):
    """q(z|x) = Delta(f(x)) at site ``"z"``: an MLP ``x -> hidden -> J`` (deterministic encoder)."""

    def __init__(self, x_dim: int, latent_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", site: str = "z"):
        super().__init__()
        self.x_dim, self.latent_dim, self.site = int(x_dim), int(latent_dim), site
        self.encoder = MLP([self.x_dim, *hidden, self.latent_dim], activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x, num_data=None, **kwargs):
        z = self.encode(x)
        with data_plate(x.shape[0], num_data, device=x.device):
            return pyro.sample(self.site, dist.Delta(z, event_dim=1))


class DenoisingPointGuide(PointGuide):
    """:class:`PointGuide` that encodes a corrupted input while ``self.training``."""

    def __init__(self, x_dim: int, latent_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", noise: float = 0.25, noise_type: str = "masking",
                 site: str = "z"):
        super().__init__(x_dim, latent_dim, hidden, activation, site)
        if noise_type not in NOISE_TYPES:
            raise ConfigError(f"unknown noise type {noise_type!r}; choose one of "
                              f"{', '.join(NOISE_TYPES)}")
        self.noise, self.noise_type = float(noise), noise_type

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.noise > 0:
            x = corrupt(x, self.noise, self.noise_type)
        return self.encoder(x)
