"""Pyro models p(z) p(x|z), installed as ``ppl_vae.models`` (source folder ``models/``)."""

from .likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    GaussianLikelihood,
    Likelihood,
    make_likelihood,
)
from .vae import VAEModel

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "Likelihood",
    "VAEModel",
    "make_likelihood",
]
