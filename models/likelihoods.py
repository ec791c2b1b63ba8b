"""Observation models p(x | decoder output).

A likelihood turns the decoder network's raw output into a Pyro distribution over one data point
(event dimension 1). ``num_params`` says how many numbers per pixel the decoder must produce.

* :class:`BernoulliLikelihood` — ``x_d ~ Bernoulli(sigmoid(f_d(z)))`` for binary data.
* :class:`GaussianLikelihood` — ``x ~ N(mu(z), diag sigma^2(z))`` with both the mean and the
  scale produced by the network (Kingma & Welling 2014, appendix C.2); the scale is
  ``softplus(.) + min_scale`` so that it is positive and bounded away from zero.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppl_vae.errors import ConfigError, DataError
from ppl_vae.nn import exp_log_softplus
from ppl_vae.poutine.capture import is_capturing

__all__ = ["Likelihood", "BernoulliLikelihood", "LogitBernoulli", "GaussianLikelihood",
           "make_likelihood", "LIKELIHOODS"]


class Likelihood:
    """Base class: maps decoder output of shape ``(..., num_params * x_dim)`` to p(x|z)."""

    name = "base"
    num_params = 1
    binary = False

    def __call__(self, out: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """E[x | z] for the decoder output ``out`` (what plots show)."""
        raise NotImplementedError

    def check_support(self, x: torch.Tensor, source: str = "data") -> None:
        """Raise :class:`DataError` if ``x`` is outside the support of this likelihood."""
        if not torch.isfinite(x).all():
            raise DataError(f"{source}: contains NaN or infinite values")

    def to_config(self) -> dict:
        return {"name": self.name}


class LogitBernoulli(dist.Bernoulli):
    """``Bernoulli(logits=l)`` whose ``log_prob`` is ``logsigmoid((2x - 1) l)``: equal to the
    usual ``-binary_cross_entropy_with_logits(l, x)`` on the support {0, 1}, in two passes over
    the (samples x points x pixels) tensor instead of five — the likelihood is a third of the
    work of evaluating log p(x) by importance sampling. Off the support (grey values, only
    possible with validation off) it falls back to the cross-entropy x l - softplus(l). While a
    graph is recorded (:mod:`ppl_vae.infer.compiled`) it is the branch-free x l - softplus(l)
    with softplus written by :func:`~ppl_vae.nn.exp_log_softplus`, which Inductor compiles to
    vectorized kernels (``log1p``, inside ``softplus``, is not vectorized on CPU)."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        if is_capturing():
            return value * self.logits - exp_log_softplus(self.logits)
        if value.is_floating_point() and not bool(((value == 0) | (value == 1)).all()):
            return value * self.logits - F.softplus(self.logits)
        return F.logsigmoid(self.logits * (2 * value - 1))


class BernoulliLikelihood(Likelihood):
    name = "bernoulli"
    num_params = 1
    binary = True

    def __call__(self, out):
        return LogitBernoulli(logits=out).to_event(1)

    def mean(self, out):
        return torch.sigmoid(out)

    def check_support(self, x, source="data"):
        super().check_support(x, source)
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{source}: values outside [0, 1] (min {lo:g}, max {hi:g}) cannot be used with "
                "the Bernoulli likelihood; scale the data to [0, 1] (e.g. divide by 255)"
            )


class GaussianLikelihood(Likelihood):
    name = "gaussian"
    num_params = 2

    def __init__(self, min_scale: float = 1e-2):
        if not min_scale > 0:
            raise ConfigError(f"min_scale must be > 0, got {min_scale}")
        self.min_scale = float(min_scale)

    def loc_scale(self, out):
        loc, raw_scale = out.chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale

    def __call__(self, out):
        loc, scale = self.loc_scale(out)
        return dist.Normal(loc, scale).to_event(1)

    def mean(self, out):
        return self.loc_scale(out)[0]

    def to_config(self):
        return {"name": self.name, "min_scale": self.min_scale}


LIKELIHOODS = {"bernoulli": BernoulliLikelihood, "gaussian": GaussianLikelihood}


def make_likelihood(spec) -> Likelihood:
    """Build a likelihood from a name, a config dict or a :class:`Likelihood` instance."""
    if isinstance(spec, Likelihood):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name")
    else:
        name, spec = spec, {}
    if name not in LIKELIHOODS:
        raise ConfigError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](**spec)
