"""Pyro models p(z) p(x|z), installed as ``ppl_vae.models`` (source folder ``models/``)."""

from .likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    GaussianLikelihood,
    Likelihood,
    make_likelihood,
)
from .hierarchical import GaussianConditional, HierarchicalVAE
from .sbn import SigmoidBeliefNetwork
from .vae import VAEModel
from .autoencoder import AutoencoderModel

__all__ = [
    "AutoencoderModel",
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "GaussianConditional",
    "GaussianLikelihood",
    "HierarchicalVAE",
    "Likelihood",
    "SigmoidBeliefNetwork",
    "VAEModel",
    "make_likelihood",
]
