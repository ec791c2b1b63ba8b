"""Plain torch building blocks shared by models and guides."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ppl_vae.errors import ConfigError

__all__ = ["MLP", "ACTIVATIONS", "exp_log_softplus", "glorot_", "last_linear",
           "softplus_inverse"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}


class MLP(nn.Sequential):
    """Fully connected network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Hidden layers use ``activation``; the output layer is linear. Works on inputs with any number
    of leading batch dimensions (e.g. a vectorized particle dimension in front of the data).
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu"):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ConfigError(f"MLP sizes must be >= 2 positive integers, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}"
            )
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.sizes = tuple(sizes)


def last_linear(net: nn.Module) -> nn.Linear | None:
    """The last :class:`torch.nn.Linear` inside ``net`` (its output layer), or None."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def exp_log_softplus(x: torch.Tensor) -> torch.Tensor:
    r"""softplus(x) = log(1 + e^x), written as

    .. math:: \mathrm{softplus}(x) = \tfrac12 (x + |x|) + \log\big(1 + e^{-|x|}\big),

    with ``log`` and ``exp`` instead of ``log1p``: Inductor's CPU kernels vectorize these and not
    ``log1p``, which makes the fused Bernoulli log-likelihood of a compiled step or
    importance-sampling block about 10x faster on the (samples x points x pixels) tensor. The
    result differs from :func:`torch.nn.functional.softplus` by less than the float's epsilon
    per element (the ``1 + e^{-|x|}`` rounding), and ``(x + |x|) / 2`` makes the gradient at 0
    the true 1/2 (``relu`` would give 0)."""
    return 0.5 * (x + x.abs()) + torch.log(1.0 + torch.exp(-x.abs()))


def softplus_inverse(y: float) -> float:
    """The x with softplus(x) = ``y`` > 0: log(expm1(y)), computed stably in float64."""
    t = torch.tensor(float(y), dtype=torch.float64)
    return float(t + torch.log(-torch.expm1(-t)))


def glorot_(module: nn.Module) -> nn.Module:
    """Every :class:`torch.nn.Linear` in ``module``: Glorot & Bengio's (2010) uniform weights,
    U(+-sqrt(6 / (fan_in + fan_out))) (gain 1), and zero biases; in place, returns ``module``.
    PyTorch's default is U(+-1/sqrt(fan_in)) for weights and biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
