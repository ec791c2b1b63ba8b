"""Hierarchical VAE: several stochastic layers, p(x | z1) p(z1 | z2) ... p(z_{L-1} | z_L) p(z_L).

The generative model of Rezende et al. (2014, "Stochastic backpropagation and approximate
inference in deep generative models") and of the two-stochastic-layer experiments of Burda et al.
(2016, "Importance Weighted Autoencoders"), as a Pyro model::

    z_L ~ N(0, I)                                      site "zL"
    z_l | z_{l+1} ~ N(mu_l(z_{l+1}), diag sigma_l(z_{l+1})^2)   site "zl",  l = L-1, ..., 1
    x | z_1 ~ p(x | f(z_1))                            site "x" (observed)

every site inside ``pyro.plate("data")`` (dim -1) and with event dim 1. ``mu_l`` and ``sigma_l``
come from one network per layer (:class:`GaussianConditional`, sigma = softplus(.) + min_scale);
p(x | f(z_1)) is any likelihood of :mod:`ppl_vae.models.likelihoods`.

Composing one reads like the math, bottom to top (no subclassing)::

    model = HierarchicalVAE(
        decoder=MLP([100, 200, 200, 784], "tanh"), likelihood="bernoulli",        # p(x | z1)
        conditionals=[GaussianConditional.mlp(50, 100, hidden=(100, 100))],       # p(z1 | z2)
        top_dim=50,                                                               # p(z2) = N(0, I)
    )

:meth:`HierarchicalVAE.mlp` builds the architecture of Burda et al. (2016, section 5) from a
list of latent sizes. The guides that go with it are in :mod:`ppl_vae.guides.hierarchical`.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from ppl_vae.errors import ConfigError
from ppl_vae.models.likelihoods import make_likelihood
from ppl_vae.nn import MLP, last_linear, softplus_inverse
from ppl_vae.poutine.plates import data_plate

__all__ = ["GaussianConditional", "HierarchicalVAE", "latent_site", "between_hidden",
           "PRIOR_INITS"]

#: Initialisations of :meth:`HierarchicalVAE.mlp`'s conditionals p(z_l | z_{l+1}).
PRIOR_INITS = ("random", "standard")


def latent_site(level: int) -> str:
    """Sample-site name of stochastic layer ``level`` (1 = next to x): ``"z1"``, ``"z2"``, ..."""
    return f"z{int(level)}"


def between_hidden(lower_dim: int, num_hidden: int) -> tuple[int, ...]:
    """Hidden widths of the networks between z_l (size ``lower_dim``) and z_{l+1}.

    ``num_hidden`` layers of width dim(z_l): for Burda et al.'s (2016) two-layer model
    (z1: 100, z2: 50, two hidden layers) this is (100, 100), their architecture.
    """
    return (int(lower_dim),) * int(num_hidden)


def _in_out(net: nn.Module) -> tuple[int | None, int | None]:
    """(input size, output size) of ``net`` when it can be read off (MLP / Linear), else None."""
    if isinstance(net, MLP):
        return net.sizes[0], net.sizes[-1]
    if isinstance(net, nn.Linear):
        return net.in_features, net.out_features
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[0].in_features, linears[-1].out_features
    return None, None


class GaussianConditional(nn.Module):
    """A diagonal Gaussian whose parameters are a network of its parent: N(mu(u), diag sigma(u)^2).

    ``net`` maps the parent u (shape ``(..., in_dim)``) to ``2 * dim`` numbers: the first half is
    mu(u), the second goes through sigma = softplus(.) + ``min_scale``. Used for the generative
    conditionals p(z_l | z_{l+1}) and for the guides' factors q(z_1 | x), q(z_{l+1} | z_l). Works
    with any number of leading batch dimensions (vectorized particles).

    ``dim`` (the size of the variable) is read off the network's last linear layer when omitted.
    """

    def __init__(self, net: nn.Module, dim: int | None = None, min_scale: float = 1e-3):
        super().__init__()
        in_dim, out = _in_out(net)
        if dim is None:
            if out is None or out % 2:
                raise ConfigError("GaussianConditional: pass dim= (the net's output must be "
                                  "2 * dim numbers: mean and raw scale)")
            dim = out // 2
        if out is not None and out != 2 * int(dim):
            raise ConfigError(f"GaussianConditional: the network outputs {out} numbers, but a "
                              f"{dim}-dimensional Gaussian needs 2 * {dim} = {2 * int(dim)}")
        if not min_scale > 0:
            raise ConfigError(f"min_scale must be > 0, got {min_scale}")
        self.net = net
        self.dim = int(dim)
        self.in_dim = in_dim
        self.min_scale = float(min_scale)

    @classmethod
    def mlp(cls, in_dim: int, dim: int, hidden: Sequence[int] = (), activation: str = "tanh",
            min_scale: float = 1e-3) -> "GaussianConditional":
        """N(mu(u), sigma(u)^2) with an MLP ``in_dim -> hidden... -> 2 * dim``."""
        return cls(MLP([int(in_dim), *hidden, 2 * int(dim)], activation), int(dim), min_scale)

    def reset_to(self, loc: float = 0.0, scale: float = 1.0) -> "GaussianConditional":
        """Make the factor start as N(loc, scale^2 I) for every parent value, and return it.

        Zeroes the weights of the network's last linear layer and sets its biases so that
        mu(u) = ``loc`` and sigma(u) = ``scale``; the gradient with respect to those weights is
        not zero, so the dependence on u is learned from there. Applied to the conditionals
        p(z_l | z_{l+1}) of a :class:`HierarchicalVAE` (``prior_init="standard"``) it makes an
        L-layer model start as the one-layer VAE with a standard-normal prior on z1 and unused
        upper layers (docs/hierarchical.md has the measurement behind it).
        """
        last = last_linear(self.net)
        if last is None:
            raise ConfigError("GaussianConditional.reset_to needs a network that ends in a "
                              "torch.nn.Linear layer")
        if not scale > self.min_scale:
            raise ConfigError(f"scale must exceed min_scale = {self.min_scale}, got {scale}")
        with torch.no_grad():
            last.weight.zero_()
            last.bias[: self.dim].fill_(float(loc))
            last.bias[self.dim:].fill_(softplus_inverse(float(scale) - self.min_scale))
        return self

    def loc_scale(self, parent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu(u), sigma(u)), each of shape ``(..., dim)``."""
        loc, raw = self.net(parent).chunk(2, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def forward(self, parent: torch.Tensor) -> dist.TorchDistribution:
        """The distribution N(mu(u), diag sigma(u)^2), event dim 1."""
        loc, scale = self.loc_scale(parent)
        return dist.Normal(loc, scale).to_event(1)


class HierarchicalVAE(PyroModule):
    """Pyro model p(x | z1) prod_{l<L} p(z_l | z_{l+1}) p(z_L) of any depth L >= 1.

    Arguments, in the order of the factorization:

    ``decoder``, ``likelihood``
        p(x | z1) = likelihood(decoder(z1)); the decoder outputs ``likelihood.num_params * x_dim``
        numbers (any :class:`torch.nn.Module`).
    ``conditionals``
        ``[p(z1 | z2), p(z2 | z3), ..., p(z_{L-1} | z_L)]``, each a :class:`GaussianConditional`
        (empty for L = 1): ``conditionals[l - 1]`` is the factor of site ``"z{l}"``.
    ``top_dim``
        size of z_L, whose prior is N(0, I).

    Call as ``model(x=None, num_data=None, batch_size=None)``, like
    :class:`~ppl_vae.models.VAEModel`: sites ``"zL"``, ..., ``"z1"`` (sampled top-down) and the
    observed ``"x"``, all in the data plate; ``num_data`` is the full data-set size during
    minibatch training; with ``x=None`` pass ``batch_size`` to sample. ``latent_dims`` is
    ``(dim z1, ..., dim zL)`` and ``sites`` their names.
    """

    def __init__(self, decoder: nn.Module, likelihood="bernoulli",
                 conditionals: Sequence[GaussianConditional] = (), top_dim: int | None = None,
                 x_dim: int | None = None):
        super().__init__()
        conditionals = list(conditionals)
        for i, c in enumerate(conditionals):
            if not isinstance(c, GaussianConditional):
                raise ConfigError(f"conditionals[{i}] (p(z{i + 1} | z{i + 2})) must be a "
                                  f"GaussianConditional, got {type(c).__name__}")
        if top_dim is None:
            top_dim = conditionals[-1].in_dim if conditionals else _in_out(decoder)[0]
            if top_dim is None:
                raise ConfigError("HierarchicalVAE: pass top_dim= (the size of z_L)")
        self.likelihood = make_likelihood(likelihood)
        self.decoder = decoder
        self.conditionals = nn.ModuleList(conditionals)
        self.latent_dims = tuple(c.dim for c in conditionals) + (int(top_dim),)
        self.sites = tuple(latent_site(level) for level in range(1, len(self.latent_dims) + 1))
        dec_in, dec_out = _in_out(decoder)
        if x_dim is None and dec_out is not None:
            x_dim = dec_out // self.likelihood.num_params
        self.x_dim = None if x_dim is None else int(x_dim)
        self._check_sizes(dec_in)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def _check_sizes(self, dec_in) -> None:
        if dec_in is not None and dec_in != self.latent_dims[0]:
            raise ConfigError(f"the decoder takes {dec_in} inputs but z1 has "
                              f"{self.latent_dims[0]} dimensions")
        for level, c in enumerate(self.conditionals, start=1):
            parent = self.latent_dims[level]
            if c.in_dim is not None and c.in_dim != parent:
                raise ConfigError(f"p(z{level} | z{level + 1}) takes {c.in_dim} inputs but "
                                  f"z{level + 1} has {parent} dimensions")

    @classmethod
    def mlp(cls, x_dim: int, latent_dims: Sequence[int], hidden: Sequence[int] = (200, 200),
            likelihood="bernoulli", activation: str = "tanh",
            min_scale: float = 1e-3, prior_init: str = "random") -> "HierarchicalVAE":
        """The MLP architecture of Burda et al. (2016), section 5, for any depth.

        ``hidden`` are the widths on the x side, listed from x upwards (the encoder's
        ``x -> hidden -> z1``); the decoder ``z1 -> reversed(hidden) -> x`` mirrors them. Between
        z_{l+1} and z_l: ``len(hidden)`` layers of width dim(z_l) (:func:`between_hidden`). With
        ``latent_dims=(100, 50)``, ``hidden=(200, 200)``, tanh: their two-stochastic-layer model.

        ``prior_init``: ``"random"`` (PyTorch's default initialisation everywhere) or
        ``"standard"``:
        every conditional p(z_l | z_{l+1}) starts as N(0, I) (:meth:`GaussianConditional.reset_to`),
        so the model starts as a one-layer VAE whose upper layers are unused until they help.
        """
        if prior_init not in PRIOR_INITS:
            raise ConfigError(f"unknown prior_init {prior_init!r}; choose one of "
                              f"{', '.join(PRIOR_INITS)}")
        dims = [int(d) for d in latent_dims]
        if not dims or min(dims) < 1:
            raise ConfigError(f"latent_dims must be one or more positive sizes, got {latent_dims}")
        lik = make_likelihood(likelihood)
        decoder = MLP([dims[0], *reversed(tuple(hidden)), lik.num_params * int(x_dim)],
                      activation)
        conditionals = [
            GaussianConditional.mlp(dims[level], dims[level - 1],
                                    tuple(reversed(between_hidden(dims[level - 1], len(hidden)))),
                                    activation, min_scale)
            for level in range(1, len(dims))
        ]
        model = cls(decoder, lik, conditionals, dims[-1], x_dim=x_dim)
        if prior_init == "standard":
            model.reset_conditionals()
        return model

    def reset_conditionals(self) -> "HierarchicalVAE":
        """Make every p(z_l | z_{l+1}) start as N(0, I) (:meth:`GaussianConditional.reset_to`)."""
        for c in self.conditionals:
            c.reset_to(0.0, 1.0)
        return self

    @property
    def depth(self) -> int:
        return len(self.latent_dims)

    def prior(self) -> dist.TorchDistribution:
        """p(z_L) = N(0, I) over one data point."""
        zero = self._zero
        return dist.Normal(zero, zero + 1.0).expand([self.latent_dims[-1]]).to_event(1)

    def conditional(self, level: int, parent: torch.Tensor) -> dist.TorchDistribution:
        """p(z_level | z_{level+1} = parent) for 1 <= level < L."""
        return self.conditionals[level - 1](parent)

    def forward(self, x=None, num_data=None, batch_size=None):
        n = x.shape[0] if x is not None else int(batch_size or 1)
        with data_plate(n, num_data, device=self._zero.device):
            z = pyro.sample(self.sites[-1], self.prior())
            for level in range(self.depth - 1, 0, -1):
                z = pyro.sample(self.sites[level - 1], self.conditional(level, z))
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)
