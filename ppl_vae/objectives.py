"""Registry of variational objectives (ELBO estimators), by name.

Every objective is a Pyro :class:`~pyro.infer.elbo.ELBO` (plus, optionally, an effect handler
applied to the guide and extra trainable modules such as baselines), so that any of them can train
or be measured on *any* Pyro model/guide pair. Training, the gradient-estimator benchmark, the CLI
and the tests all enumerate :func:`available_objectives`.

Built-in training objectives (all with ``num_particles`` L, vectorized over particles):

``trace``
    :class:`pyro.infer.Trace_ELBO`: Monte Carlo ELBO, pathwise (reparameterized) gradients.
``meanfield``
    :class:`pyro.infer.TraceMeanField_ELBO`: KL(q(z|x) || p(z)) in closed form where both are
    known (for a diagonal Gaussian q and N(0, I) prior,
    -KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2), Kingma & Welling 2014, App. B).
``tracegraph``
    :class:`pyro.infer.TraceGraph_ELBO`: uses the score function (REINFORCE, Williams 1992;
    Ranganath et al. 2014) for every non-reparameterizable site and Rao-Blackwellizes with the
    dependency graph; for reparameterizable sites it reduces to ``trace``.
``iwae``
    :class:`~ppl_vae.infer.iwae_elbo.IWAE_ELBO` (:class:`pyro.infer.RenyiELBO` with alpha=0 and
    minibatch scaling outside the log-mean-exp): the importance-weighted bound
    L_K = E log (1/K) sum_k p(x, z_k) / q(z_k|x) with K = ``num_particles`` (Burda et al. 2016).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import pyro.infer
from torch import nn

from .errors import ConfigError
from .infer.iwae_elbo import IWAE_ELBO

__all__ = [
    "Objective",
    "ObjectiveSpec",
    "register_objective",
    "make_objective",
    "available_objectives",
    "objective_spec",
]


def _identity(fn):
    return fn


@dataclass
class Objective:
    """A ready-to-use objective: a Pyro ELBO, a guide transformation and extra modules.

    ``wrap_guide(guide)`` returns the guide the ELBO must see (e.g. with reparameterization
    switched off by an effect handler); ``modules`` holds trainable modules owned by the objective
    (e.g. a neural baseline) whose parameters the optimizer must update too.
    """

    name: str
    elbo: pyro.infer.ELBO
    wrap_guide: Callable = _identity
    modules: dict[str, nn.Module] = field(default_factory=dict)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """-objective estimate (a float); accumulates the gradient estimate into ``.grad``."""
        return self.elbo.loss_and_grads(model, self.wrap_guide(guide), *args, **kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        """-objective estimate, without gradients."""
        return self.elbo.loss(model, self.wrap_guide(guide), *args, **kwargs)


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective: ``factory(num_particles, vectorize_particles, **options)``.

    ``takes_k``: the name may carry a particle count as a suffix (``iwae-5`` = ``iwae`` with K=5).
    ``requires_reparam``: the estimator needs every latent guide site to be reparameterizable
    (it gives wrong or no guide gradients for discrete latents, e.g. a sigmoid belief network).
    """

    name: str
    factory: Callable[..., Objective]
    description: str
    takes_k: bool = False
    requires_reparam: bool = False


_REGISTRY: dict[str, ObjectiveSpec] = {}


def register_objective(
    name: str, description: str, takes_k: bool = False, requires_reparam: bool = False
):
    """Decorator registering ``factory(num_particles, vectorize_particles, **options)``."""

    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"objective {name!r} is already registered")
        _REGISTRY[name] = ObjectiveSpec(name, factory, description, takes_k, requires_reparam)
        return factory

    return deco


def available_objectives() -> list[str]:
    """Names of all registered objectives, in registration order."""
    return list(_REGISTRY)


def _parse(name: str) -> tuple[ObjectiveSpec, int | None]:
    if name in _REGISTRY:
        return _REGISTRY[name], None
    m = re.fullmatch(r"(.+)-(\d+)", name)
    if m and m.group(1) in _REGISTRY and _REGISTRY[m.group(1)].takes_k:
        k = int(m.group(2))
        if k < 1:
            raise ConfigError(f"objective {name!r}: the particle count must be >= 1")
        return _REGISTRY[m.group(1)], k
    raise ConfigError(
        f"unknown objective {name!r}; choose one of {', '.join(available_objectives())}"
        " (names marked with -K take a particle count, e.g. iwae-5)"
    )


def objective_spec(name: str) -> ObjectiveSpec:
    """The registered :class:`ObjectiveSpec` for ``name`` (``iwae-5`` resolves to ``iwae``)."""
    return _parse(name)[0]


def make_objective(
    name: str, num_particles: int = 1, vectorize_particles: bool = True, **options
) -> Objective:
    """Build the objective registered as ``name`` with ``num_particles`` samples per data point.

    A ``-K`` suffix (``iwae-5``) overrides ``num_particles``. Raises :class:`ConfigError` for an
    unknown name or a particle count below 1.
    """
    spec, k = _parse(name)
    num_particles = int(k if k is not None else num_particles)
    if num_particles < 1:
        raise ConfigError(f"num_particles must be >= 1, got {num_particles}")
    obj = spec.factory(num_particles, vectorize_particles, **options)
    obj.name = name
    return obj


def _elbo_kwargs(num_particles, vectorize_particles):
    return dict(
        num_particles=num_particles,
        vectorize_particles=vectorize_particles and num_particles > 1,
        max_plate_nesting=1,
    )


@register_objective("trace", "Trace_ELBO: Monte Carlo ELBO with reparameterized gradients")
def _trace(num_particles, vectorize_particles, **_):
    return Objective("trace", pyro.infer.Trace_ELBO(**_elbo_kwargs(num_particles, vectorize_particles)))


@register_objective(
    "meanfield", "TraceMeanField_ELBO: analytic KL(q||p) where available", requires_reparam=True
)
def _meanfield(num_particles, vectorize_particles, **_):
    return Objective(
        "meanfield",
        pyro.infer.TraceMeanField_ELBO(**_elbo_kwargs(num_particles, vectorize_particles)),
    )


@register_objective(
    "tracegraph", "TraceGraph_ELBO: score-function terms for non-reparameterizable sites"
)
def _tracegraph(num_particles, vectorize_particles, **_):
    return Objective(
        "tracegraph",
        pyro.infer.TraceGraph_ELBO(**_elbo_kwargs(num_particles, vectorize_particles)),
    )


@register_objective(
    "iwae",
    "RenyiELBO(alpha=0): importance-weighted bound L_K, K = particles",
    takes_k=True,
    requires_reparam=True,
)
def _iwae(num_particles, vectorize_particles, **_):
    return Objective(
        "iwae",
        # RenyiELBO(alpha=0) with the N/B minibatch scale applied outside the log-mean-exp
        # (pyro's applies it inside, sharpening the weights); see ppl_vae.infer.iwae_elbo.
        IWAE_ELBO(**_elbo_kwargs(num_particles, vectorize_particles)),
    )
