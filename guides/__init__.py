"""Pyro guides q(z|x), installed as ``ppl_vae.guides`` (source folder ``guides/``)."""

from .bernoulli import BernoulliGuide
from .diagonal_normal import DiagonalNormalGuide
from .hierarchical import BottomUpGuide, TopDownGuide, precision_weighted

__all__ = [
    "BernoulliGuide",
    "BottomUpGuide",
    "DiagonalNormalGuide",
    "TopDownGuide",
    "precision_weighted",
]
