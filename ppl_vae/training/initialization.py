"""How a VAE's networks start (``TrainConfig.weight_init``, ``TrainConfig.prior_init``).

``weight_init`` is ``torch`` (PyTorch's defaults), ``burda``, or a ``+``-joined list of the parts
of ``burda``, the initialisation of Burda, Grosse & Salakhutdinov's (2016) code, which differs
from PyTorch's default in three ways:

``glorot``
    every linear layer: Glorot & Bengio's (2010) uniform weights (gain 1), zero biases
    (:func:`ppl_vae.nn.glorot_`);
``unit-scale``
    every diagonal Gaussian (the guide's factors, the model's p(z_l | z_{l+1})) starts with scale
    1 for a zero hidden state: the bias of its raw-scale output is softplus^-1(1 - min_scale)
    (their code takes sigma = exp(linear), 1 there; PyTorch's default gives softplus(~0) = 0.69);
``pixel-bias``
    a Bernoulli decoder's output bias is the logit of the training pixel means (clipped to
    [0.001, 0.999]), so p(x | z) starts at the pixel marginals.

With PyTorch's default a tanh VAE sits for hundreds of steps on a plateau where the decoder
ignores z, and the two-layer model far longer (docs/hierarchical.md has the measurements).
Each part applies wherever it can, in every model family: ``glorot`` to all linear layers
(flows included), ``unit-scale`` to :class:`~ppl_vae.models.GaussianConditional` factors and the
diagonal and IAF guides' encoders, ``pixel-bias`` to a model with a ``decoder`` network and a
Bernoulli likelihood.
``prior_init="standard"`` makes each p(z_l | z_{l+1}) start as N(0, I)
(:meth:`ppl_vae.models.HierarchicalVAE.reset_conditionals`).
"""

from __future__ import annotations

import torch
from torch import nn

from ppl_vae.errors import ConfigError
from ppl_vae.nn import glorot_, last_linear, softplus_inverse

__all__ = ["WEIGHT_INIT_PARTS", "weight_init_parts", "initialize_networks",
           "initialize_output_bias", "unit_scale_"]

#: The parts of ``weight_init="burda"``, in the order they are applied.
WEIGHT_INIT_PARTS = ("glorot", "unit-scale", "pixel-bias")


def weight_init_parts(scheme: str) -> tuple[str, ...]:
    """The parts of ``scheme`` (``torch`` -> none, ``burda`` -> all); a ConfigError names an
    unknown one."""
    if scheme == "torch":
        return ()
    if scheme == "burda":
        return WEIGHT_INIT_PARTS
    parts = tuple(p for p in str(scheme).split("+") if p)
    unknown = [p for p in parts if p not in WEIGHT_INIT_PARTS]
    if unknown or not parts:
        raise ConfigError(f"unknown weight_init {scheme!r}; choose torch, burda or a '+'-joined "
                          f"list of {', '.join(WEIGHT_INIT_PARTS)}")
    return parts


def unit_scale_(linear: nn.Linear | None, dim: int, min_scale: float) -> None:
    """Set the raw-scale half of ``linear``'s bias (outputs ``dim:``) so that
    softplus(bias) + ``min_scale`` = 1; nothing for a network without a linear layer."""
    if linear is None:
        return
    with torch.no_grad():
        linear.bias[dim:].fill_(softplus_inverse(1.0 - float(min_scale)))


def initialize_networks(scheme: str, *modules: nn.Module) -> None:
    """The data-independent parts of ``scheme`` on ``modules`` (models, guides), in place."""
    from ppl_vae.guides import DiagonalNormalGuide, IAFGuide
    from ppl_vae.models import GaussianConditional

    parts = weight_init_parts(scheme)
    for module in modules:
        if "glorot" in parts:
            glorot_(module)
        if "unit-scale" not in parts:
            continue
        for m in module.modules():
            if isinstance(m, GaussianConditional):
                unit_scale_(last_linear(m.net), m.dim, m.min_scale)
            elif isinstance(m, (DiagonalNormalGuide, IAFGuide)):
                unit_scale_(last_linear(m.encoder), m.latent_dim, m.min_scale)


def initialize_output_bias(scheme: str, model: nn.Module, x_train: torch.Tensor) -> None:
    """``pixel-bias``: a Bernoulli decoder's output bias = logit of the training pixel means."""
    likelihood, decoder = getattr(model, "likelihood", None), getattr(model, "decoder", None)
    if "pixel-bias" not in weight_init_parts(scheme) or decoder is None \
            or not getattr(likelihood, "binary", False):
        return
    last = last_linear(decoder)
    mean = x_train.mean(0, dtype=torch.float64).clamp(1e-3, 1 - 1e-3)
    if last is None or last.bias is None or last.bias.shape != mean.shape:
        return
    with torch.no_grad():
        last.bias.copy_(torch.logit(mean).to(last.bias))
