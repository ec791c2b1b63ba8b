"""Plain torch building blocks shared by models and guides."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .errors import ConfigError

__all__ = ["MLP", "ACTIVATIONS"]

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
