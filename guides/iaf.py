"""Inverse autoregressive flow guide (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling
2016, "Improved variational inference with inverse autoregressive flow").

q(z|x): z_0 ~ N(mu(x), diag sigma(x)^2) (the diagonal guide's encoder), then ``flow_depth``
affine autoregressive steps z_t = mu_t(z_{t-1}) + sigma_t(z_{t-1}) * z_{t-1}, each an
:class:`pyro.distributions.transforms.AffineAutoregressive` around a MADE network
(:class:`pyro.nn.AutoRegressiveNN`; hidden width ``flow_hidden``, default 3J + 1), with the
coordinate order reversed between steps (a :class:`~pyro.distributions.transforms.Permute`).
The flow is context-free (its weights do not depend on x; the x-dependence is in z_0), which
Kingma et al. note already helps; the site's distribution is one
``TransformedDistribution(Normal(mu, sigma).to_event(1), transforms)``, so::

    log q(z_T|x) = log N(z_0; mu, sigma) - sum_t log |det dz_t/dz_{t-1}|,

and every objective that needs only samples and log q (trace, iwae, stl, dreg, ...) and
:func:`ppl_vae.marginal.importance_sampling` work unchanged. Sampling is one pass per step;
``log_prob`` of the sample just drawn uses the transforms' cache (no inversion).
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import AffineAutoregressive, Permute
from pyro.nn import AutoRegressiveNN, PyroModule
from torch import nn

from ppl_vae.errors import ConfigError
from ppl_vae.nn import MLP
from ppl_vae.poutine.plates import data_plate

__all__ = ["IAFGuide"]


class _AffineAutoregressive(AffineAutoregressive):
    """Pyro's IAF step, whose inverse (log q at a value it did not sample: score-function and
    wake-phase objectives) starts from zeros of torch's default dtype: run it in the value's
    dtype, so a float64 guide inverts float64 values."""

    def _inverse(self, y):
        saved = torch.get_default_dtype()
        if not y.is_floating_point() or y.dtype == saved:
            return super()._inverse(y)
        torch.set_default_dtype(y.dtype)
        try:
            return super()._inverse(y)
        finally:
            torch.set_default_dtype(saved)

class IAFGuide(PyroModule):
    """Diagonal-Gaussian encoder followed by ``flow_depth`` IAF steps, at site ``"z"``."""

    min_scale = 1e-5

    def __init__(self, x_dim: int, latent_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", flow_depth: int = 2, flow_hidden=None,
                 site: str = "z"):
        super().__init__()
        if int(flow_depth) < 1:
            raise ConfigError(f"flow_depth must be >= 1, got {flow_depth}")
        if int(latent_dim) < 2:
            raise ConfigError("the IAF guide needs a latent dimension >= 2 (an autoregressive "
                              "transform of one variable is affine)")
        self.x_dim, self.latent_dim, self.site = int(x_dim), int(latent_dim), site
        self.flow_depth = int(flow_depth)
        j = self.latent_dim
        widths = list(flow_hidden) if flow_hidden else [3 * j + 1]
        self.encoder = MLP([self.x_dim, *hidden, 2 * j], activation)
        self.flows = nn.ModuleList(
            _AffineAutoregressive(AutoRegressiveNN(j, widths)) for _ in range(self.flow_depth))
        self.register_buffer("reverse", torch.arange(j - 1, -1, -1), persistent=False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu(x), sigma(x)) of the base distribution q(z_0|x)."""
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def transforms(self) -> list:
        out = []
        for i, flow in enumerate(self.flows):
            if i:
                out.append(Permute(self.reverse))
            out.append(flow)
        return out

    def distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = self.encode(x)
        return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1),
                                            self.transforms())

    def forward(self, x, num_data=None, **kwargs):
        d = self.distribution(x)
        with data_plate(x.shape[0], num_data, device=x.device):
            return pyro.sample(self.site, d)
