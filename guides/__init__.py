"""Pyro guides q(z|x), installed as ``ppl_vae.guides`` (source folder ``guides/``)."""

from .bernoulli import BernoulliGuide
from .diagonal_normal import DiagonalNormalGuide
from .iaf import IAFGuide
from .point import DenoisingPointGuide, PointGuide
from .hierarchical import BottomUpGuide, TopDownGuide, precision_weighted

__all__ = [
    "DenoisingPointGuide",
    "IAFGuide",
    "PointGuide",
    "BernoulliGuide",
    "BottomUpGuide",
    "DiagonalNormalGuide",
    "TopDownGuide",
    "precision_weighted",
]
