"""Pyro guides q(z|x), installed as ``ppl_vae.guides`` (source folder ``guides/``)."""

from ppl_vae.guides.bernoulli import BernoulliGuide
from ppl_vae.guides.diagonal_normal import DiagonalNormalGuide
from ppl_vae.guides.hierarchical import BottomUpGuide, TopDownGuide, precision_weighted
from ppl_vae.guides.iaf import IAFGuide
from ppl_vae.guides.point import DenoisingPointGuide, PointGuide

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
