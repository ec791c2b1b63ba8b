"""Build a model/guide pair from a :class:`~ppl_vae.config.TrainConfig`.

Model families are registered by name (``config.model``); each builder takes ``(config, x_dim)``
and returns ``(model, guide)``, two Pyro callables with the signature ``(x, num_data=None)``.
"""

from __future__ import annotations

from typing import Callable

from .config import TrainConfig
from .errors import ConfigError

__all__ = ["MODEL_FAMILIES", "register_model_family", "build_model_and_guide"]

MODEL_FAMILIES: dict[str, Callable] = {}


def register_model_family(name: str):
    def deco(fn):
        MODEL_FAMILIES[name] = fn
        return fn

    return deco


def build_model_and_guide(config: TrainConfig, x_dim: int):
    """``(model, guide)`` for ``config`` on data with ``x_dim`` features per point."""
    if config.model not in MODEL_FAMILIES:
        raise ConfigError(
            f"unknown model {config.model!r}; choose one of {sorted(MODEL_FAMILIES)}"
        )
    return MODEL_FAMILIES[config.model](config, int(x_dim))


@register_model_family("vae")
def _vae(config: TrainConfig, x_dim: int):
    from ppl_vae.guides import DiagonalNormalGuide
    from ppl_vae.models import VAEModel

    if len(config.latent_dims) != 1:
        raise ConfigError("hierarchical latents (several --latent-dims) are not available yet")
    if config.guide not in ("bottom-up",):
        raise ConfigError(f"unknown guide {config.guide!r} for model 'vae'; choose 'bottom-up'")
    (j,) = config.latent_dims
    model = VAEModel(x_dim, j, tuple(reversed(config.hidden)), config.likelihood_spec(),
                     config.activation)
    guide = DiagonalNormalGuide(x_dim, j, config.hidden, config.activation)
    return model, guide
