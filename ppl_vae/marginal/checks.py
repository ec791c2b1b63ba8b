"""Refuse model/guide pairs for which log p(x) is not defined (autoencoders).

A deterministic autoencoder written as a Pyro model/guide pair (``ppl_vae.models.AutoencoderModel``
with ``ppl_vae.guides.PointGuide``) has an improper, density-free "prior" over z and a point-mass
guide: its ``Trace_ELBO`` is exactly the reconstruction log-likelihood, but it defines no
distribution over x, so naive Monte Carlo, importance sampling and AIS have nothing to estimate.
:func:`require_density` says so in one line, before any estimator runs.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from ppl_vae.errors import ConfigError

__all__ = ["require_density"]


def _base(fn):
    while hasattr(fn, "base_dist") and not hasattr(fn, "transforms"):
        fn = fn.base_dist  # Independent, Expanded, Masked wrappers
    return fn


def _improper(fn) -> bool:
    import pyro.distributions as dist

    return isinstance(_base(fn), dist.ImproperUniform)


def _point_mass(fn) -> bool:
    import pyro.distributions as dist

    return isinstance(_base(fn), dist.Delta)


class _RefuseImproper(Messenger):
    def _pyro_sample(self, msg):
        if not msg["is_observed"] and _improper(msg["fn"]):
            raise ConfigError(
                f"log p(x) is not defined for this model: its latent site {msg['name']!r} has an "
                "improper prior with no density (a deterministic autoencoder, --model ae/dae); "
                "marginal-likelihood estimators need a model with a proper prior p(z)")


def require_density(model, guide, x) -> None:
    """Raise one-line :class:`ConfigError` if a latent site of ``model`` has an improper
    prior (``ImproperUniform``) or a latent site of ``guide`` is a point mass (``Delta``).

    Runs ``model(x)`` / ``guide(x)`` once each with the RNG state saved and restored (so callers'
    random streams are unchanged); other failures are left to the caller's own checks.
    """
    with torch.no_grad(), torch.random.fork_rng(devices=[]), poutine.block():
        try:
            poutine.trace(_RefuseImproper()(model)).get_trace(x)
        except ConfigError as exc:  # pyro appends the trace's shapes to the message: drop them
            raise ConfigError(str(exc).strip().splitlines()[0]) from None
        except Exception:  # noqa: BLE001 - reported by the estimator's probe
            pass
        if guide is None:
            return
        try:
            tr = poutine.trace(guide).get_trace(x)
        except Exception:  # noqa: BLE001
            return
    for name, site in tr.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and _point_mass(site["fn"]):
            raise ConfigError(
                f"log p(x) cannot be estimated with this guide: its latent site {name!r} is a "
                "point mass (Delta, an autoencoder's encoder) with no density to weight samples "
                "by; marginal-likelihood estimators need a guide with a density q(z|x)")
