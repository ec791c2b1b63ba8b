"""Plain torch building blocks shared by models and guides."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .errors import ConfigError

__all__ = ["MLP", "ACTIVATIONS", "WEIGHT_INITS", "init_weights"]

#: Initialisations :func:`init_weights` knows; ``torch`` leaves PyTorch's defaults.
WEIGHT_INITS = ("torch", "xavier")

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


def init_weights(module: nn.Module, scheme: str = "xavier", activation: str = "tanh") -> nn.Module:
    """Re-initialise every :class:`torch.nn.Linear` in ``module`` in place; return ``module``.

    ``xavier``: Glorot & Bengio's (2010) uniform weights with the activation's gain
    (:func:`torch.nn.init.calculate_gain`: 5/3 for tanh, sqrt(2) for ReLU) and zero biases.
    PyTorch's default (``torch``: U(+-1/sqrt(fan_in))) shrinks signals through each tanh layer
    by about 1/sqrt(3), so an encoder's mean starts almost constant in x while q's scale starts
    near 0.69, and the VAE sits on a plateau where the decoder ignores z (docs/hierarchical.md
    has the measurement).
    """
    if scheme not in WEIGHT_INITS:
        raise ConfigError(f"unknown weight init {scheme!r}; choose one of {', '.join(WEIGHT_INITS)}")
    if scheme == "torch":
        return module
    gain_name = {"relu": "relu", "tanh": "tanh", "elu": "relu"}.get(activation, "linear")
    gain = nn.init.calculate_gain(gain_name)
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)
    return module
