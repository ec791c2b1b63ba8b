"""Guides for :class:`~ppl_vae.models.HierarchicalVAE`: bottom-up and top-down (ladder).

Both sample every z_l with the reparameterization trick, so ``trace``, ``tracegraph`` and
``iwae`` get pathwise gradients.

:class:`BottomUpGuide` (Burda et al. 2016, section 5; Rezende et al. 2014)
    q(z_1, ..., z_L | x) = q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}),
    each factor a diagonal Gaussian whose mean and scale are a network of the layer below.
    Sites are sampled z1, z2, ..., zL.

:class:`TopDownGuide` (the ladder VAE's inference model, Sønderby et al. 2016)
    a deterministic bottom-up pass d_1 = f_1(x), d_l = f_l(d_{l-1}) gives "data" Gaussians
    N(mu^_l, sigma^_l^2) = head_l(d_l); then, top-down::

        q(z_L | x)             = N(mu^_L, sigma^_L^2)
        q(z_l | z_{l+1}, x)    = N(mu_q, sigma_q^2),   sigma_q^-2 = sigma^_l^-2 + sigma_p^-2,
                                  mu_q = (mu^_l sigma^_l^-2 + mu_p sigma_p^-2) sigma_q^2,

    where (mu_p, sigma_p) are the *model's own* p(z_l | z_{l+1}) at the sampled z_{l+1}: the
    guide shares the generative path (its networks are the model's ``conditionals``, which the
    guide uses but does not own, so they are trained and saved once, with the model). Sites are
    sampled zL, ..., z1 — the model's order.

Analytic KL (``meanfield``): Pyro's :class:`~pyro.infer.TraceMeanField_ELBO` is exact only if no
latent's parents in the model are its descendants in the guide. The top-down guide satisfies this
for any L (it has the model's dependency structure); the bottom-up guide only for L = 1 (z1's
model parent z2 is sampled *from* z1 in the guide); the builder
(:func:`ppl_vae.training.builders.build_model_and_guide`) refuses the other case.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_vae.errors import ConfigError
from ppl_vae.models.hierarchical import (
    GaussianConditional,
    HierarchicalVAE,
    between_hidden,
    latent_site,
)
from ppl_vae.nn import ACTIVATIONS, MLP
from ppl_vae.poutine.plates import data_plate

__all__ = ["BottomUpGuide", "TopDownGuide", "precision_weighted"]


def precision_weighted(loc_a, scale_a, loc_b, scale_b) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalized product N(a) N(b) of two diagonal Gaussians: (loc, scale).

    precision = 1/scale_a^2 + 1/scale_b^2; loc = (loc_a/scale_a^2 + loc_b/scale_b^2) / precision
    (the ladder VAE's precision-weighted combination, Sønderby et al. 2016).
    """
    prec_a, prec_b = scale_a.pow(-2), scale_b.pow(-2)
    prec = prec_a + prec_b
    return (loc_a * prec_a + loc_b * prec_b) / prec, prec.rsqrt()


class BottomUpGuide(PyroModule):
    """q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}) for the sites ``"z1"``, ..., ``"zL"``.

    ``layers[l - 1]`` is the :class:`~ppl_vae.models.GaussianConditional` q(z_l | z_{l-1})
    (with z_0 = x). Call as ``guide(x, num_data=None)``; returns the sampled z_L.
    """

    def __init__(self, layers: Sequence[GaussianConditional]):
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ConfigError("BottomUpGuide needs at least one layer q(z1 | x)")
        for i, layer in enumerate(layers):
            if not isinstance(layer, GaussianConditional):
                raise ConfigError(f"layers[{i}] must be a GaussianConditional, "
                                  f"got {type(layer).__name__}")
            if i and layer.in_dim is not None and layer.in_dim != layers[i - 1].dim:
                raise ConfigError(f"q(z{i + 1} | z{i}) takes {layer.in_dim} inputs but z{i} has "
                                  f"{layers[i - 1].dim} dimensions")
        self.layers = nn.ModuleList(layers)
        self.latent_dims = tuple(layer.dim for layer in layers)
        self.sites = tuple(latent_site(level) for level in range(1, len(layers) + 1))

    @classmethod
    def mlp(cls, x_dim: int, latent_dims: Sequence[int], hidden: Sequence[int] = (200, 200),
            activation: str = "tanh", min_scale: float = 1e-3) -> "BottomUpGuide":
        """Burda et al.'s (2016) encoder: ``x -> hidden -> z1``, then ``z_l -> (dim z_l,) *
        len(hidden) -> z_{l+1}`` (see :meth:`ppl_vae.models.HierarchicalVAE.mlp`)."""
        dims = [int(d) for d in latent_dims]
        ins = [int(x_dim), *dims[:-1]]
        hiddens = [tuple(hidden)] + [between_hidden(d, len(hidden)) for d in dims[:-1]]
        return cls([GaussianConditional.mlp(i, d, h, activation, min_scale)
                    for i, d, h in zip(ins, dims, hiddens)])

    def reset_upper_layers(self) -> "BottomUpGuide":
        """Make q(z_l | z_{l-1}), l >= 2, start as N(0, I) for every z_{l-1}
        (:meth:`~ppl_vae.models.GaussianConditional.reset_to`): with the model's
        :meth:`~ppl_vae.models.HierarchicalVAE.reset_conditionals` the pair starts as a one-layer
        VAE whose upper layers cost nothing (q = p there) until they are used."""
        for layer in self.layers[1:]:
            layer.reset_to(0.0, 1.0)
        return self

    def forward(self, x, num_data=None, **kwargs):
        z = x
        with data_plate(x.shape[0], num_data, device=x.device):
            for site, layer in zip(self.sites, self.layers):
                z = pyro.sample(site, layer(z))
        return z


class TopDownGuide(PyroModule):
    """Ladder-VAE inference model q(z_L | x) prod_{l<L} q(z_l | z_{l+1}, x) (Sønderby et al. 2016).

    ``model``: the :class:`~ppl_vae.models.HierarchicalVAE` whose conditionals p(z_l | z_{l+1})
    this guide shares (kept as a reference, not a submodule: its weights belong to the model).
    ``encoders``: ``[f_1, ..., f_L]``, the deterministic bottom-up path d_l = f_l(d_{l-1}),
    d_0 = x. ``heads``: ``[h_1, ..., h_L]``, :class:`~ppl_vae.models.GaussianConditional` s giving
    (mu^_l, sigma^_l) = h_l(d_l). Call as ``guide(x, num_data=None)``; sites ``"zL"``, ...,
    ``"z1"``.
    """

    def __init__(self, model: HierarchicalVAE, encoders: Sequence[nn.Module],
                 heads: Sequence[GaussianConditional]):
        super().__init__()
        encoders, heads = list(encoders), list(heads)
        depth = len(model.latent_dims)
        if len(encoders) != depth or len(heads) != depth:
            raise ConfigError(f"TopDownGuide: the model has {depth} stochastic layers; got "
                              f"{len(encoders)} encoders and {len(heads)} heads")
        for level, (head, d) in enumerate(zip(heads, model.latent_dims), start=1):
            if not isinstance(head, GaussianConditional) or head.dim != d:
                raise ConfigError(f"heads[{level - 1}] must be a GaussianConditional of "
                                  f"dimension {d} (the size of z{level})")
        # A tuple hides the model from nn.Module registration: no duplicate parameters.
        self._generative = (model,)
        self.encoders = nn.ModuleList(encoders)
        self.heads = nn.ModuleList(heads)
        self.latent_dims = tuple(model.latent_dims)
        self.sites = tuple(model.sites)

    @property
    def model(self) -> HierarchicalVAE:
        """The generative model whose p(z_l | z_{l+1}) this guide uses."""
        return self._generative[0]

    @classmethod
    def mlp(cls, model: HierarchicalVAE, x_dim: int, hidden: Sequence[int] = (200, 200),
            activation: str = "tanh", min_scale: float = 1e-3) -> "TopDownGuide":
        """Deterministic path with the widths of :meth:`BottomUpGuide.mlp`, linear heads."""
        dims = list(model.latent_dims)
        act = ACTIVATIONS[activation] if activation in ACTIVATIONS else None
        if act is None:
            raise ConfigError(f"unknown activation {activation!r}; choose one of "
                              f"{sorted(ACTIVATIONS)}")
        widths = [tuple(hidden)] + [between_hidden(d, len(hidden)) for d in dims[:-1]]
        encoders, heads, width = [], [], int(x_dim)
        for d, h in zip(dims, widths):
            if h:
                encoders.append(nn.Sequential(MLP([width, *h], activation), act()))
                width = h[-1]
            else:
                encoders.append(nn.Identity())
            heads.append(GaussianConditional(nn.Linear(width, 2 * d), d, min_scale))
        return cls(model, encoders, heads)

    def bottom_up(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The data terms [(mu^_1, sigma^_1), ..., (mu^_L, sigma^_L)] of the deterministic pass."""
        out, d = [], x
        for f, head in zip(self.encoders, self.heads):
            d = f(d)
            out.append(head.loc_scale(d))
        return out

    def forward(self, x, num_data=None, **kwargs):
        data_terms = self.bottom_up(x)
        model = self.model
        depth = len(self.sites)
        with data_plate(x.shape[0], num_data, device=x.device):
            loc, scale = data_terms[-1]
            z = pyro.sample(self.sites[-1], dist.Normal(loc, scale).to_event(1))
            for level in range(depth - 1, 0, -1):
                p_loc, p_scale = model.conditionals[level - 1].loc_scale(z)
                loc, scale = precision_weighted(*data_terms[level - 1], p_loc, p_scale)
                z = pyro.sample(self.sites[level - 1], dist.Normal(loc, scale).to_event(1))
        return z
