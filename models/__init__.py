"""Pyro models p(z) p(x|z), installed as ``ppl_vae.models`` (source folder ``models/``)."""

from ppl_vae.models.autoencoder import AutoencoderModel
from ppl_vae.models.hierarchical import GaussianConditional, HierarchicalVAE
from ppl_vae.models.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    GaussianLikelihood,
    Likelihood,
    make_likelihood,
)
from ppl_vae.models.sbn import SigmoidBeliefNetwork
from ppl_vae.models.vae import VAEModel

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
