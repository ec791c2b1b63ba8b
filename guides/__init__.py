"""Pyro guides q(z|x), installed as ``ppl_vae.guides`` (source folder ``guides/``)."""

from .diagonal_normal import DiagonalNormalGuide

__all__ = ["DiagonalNormalGuide"]
