"""Gradient estimators of the ELBO (and of importance-weighted bounds), registered by name.

Importing this module (``import ppl_vae`` does) adds these objectives to the registry of
:mod:`ppl_vae.objectives`, so that training, ``ppl-vae grad-variance``, ``ppl-vae
compare-estimators``, the benchmark and the tests all enumerate them. Each one is a Pyro ELBO,
possibly with an effect handler on the guide and trainable modules of its own:

``reparam``
    :class:`pyro.infer.Trace_ELBO`, pathwise (reparameterized) gradient (Kingma & Welling 2014;
    Rezende et al. 2014): grad E_eps[log p(x, g(eps)) - log q(g(eps)|x)].
``analytic-kl``
    :class:`pyro.infer.TraceMeanField_ELBO`: E_q[log p(x|z)] - KL(q(z|x) || p(z)) with the KL in
    closed form; pathwise gradient of the reconstruction term.
``score``
    :class:`pyro.infer.TraceGraph_ELBO` on the *same* continuous latent with reparameterization
    switched off by :class:`~ppl_vae.infer.no_reparam.NoReparamMessenger`: the score-function
    (REINFORCE) gradient E_q[(log p(x,z) - log q(z|x)) grad log q(z|x)] (Williams 1992;
    Ranganath et al. 2014), Rao-Blackwellized per data point, no baseline.
``score-avg``
    ``score`` minus a decaying-average baseline b <- beta b + (1 - beta) c (option
    ``baseline_beta``, default 0.9).
``score-nn``
    ``score`` minus a learned input-dependent baseline, NVIL-style (Mnih & Gregor 2014, sec. 2.3
    and 3.1): b(x) = b_avg + b_psi(x), the decaying average (which tracks the overall level of the
    cost, hundreds of nats that a network would need many steps to learn) plus an MLP b_psi owned
    by the objective (``Objective.modules["baseline"]``, Pyro's ``nn_baseline`` with input x)
    trained jointly on (c - b(x))^2, i.e. on the residual. Options ``x_dim`` (else sized lazily),
    ``baseline_hidden`` (default (100,)) and ``baseline_beta``.
``rws`` (``rws-K``)
    Reweighted wake-sleep (Bornschein & Bengio 2015) with per-data-point weights,
    :class:`~ppl_vae.infer.rws.ReweightedWakeSleep`; K = 5 unless a particle count >= 2 is given.
``stl``
    "Sticking the landing" (Roeder et al. 2017), :class:`~ppl_vae.infer.stl_elbo.STL_ELBO`.
``dreg`` (``dreg-K``)
    Doubly-reparameterized IWAE gradient (Tucker et al. 2018),
    :class:`~ppl_vae.infer.dreg_elbo.DReG_ELBO`.

together with the training objectives already in :mod:`ppl_vae.objectives` (``trace``,
``meanfield``, ``tracegraph``, ``iwae``/``iwae-K``). Estimators marked ``requires_reparam`` need
every latent to be reparameterizable; on a discrete-latent model (the sigmoid belief network) only
the others apply.
"""

from __future__ import annotations

from typing import Sequence

import pyro.infer

from .errors import ConfigError
from .infer.baselines import AverageBaselineTraceGraph_ELBO, BaselineMessenger, NeuralBaseline
from .infer.dreg_elbo import DReG_ELBO
from .infer.no_reparam import NoReparamMessenger
from .infer.rws import ReweightedWakeSleep
from .infer.stl_elbo import STL_ELBO
from .objectives import (
    Objective,
    _elbo_kwargs,
    available_objectives,
    objective_spec,
    register_objective,
)

__all__ = [
    "ESTIMATORS",
    "DEFAULT_RWS_PARTICLES",
    "requires_reparam",
    "score_function_guide",
]

#: The gradient estimators of the benchmark (issue 4), in report order.
ESTIMATORS = ("reparam", "analytic-kl", "score", "score-avg", "score-nn", "iwae", "rws", "stl",
              "dreg")

DEFAULT_RWS_PARTICLES = 5


def requires_reparam(name: str) -> bool:
    """Whether the objective ``name`` needs reparameterizable latents."""
    return objective_spec(name).requires_reparam


def score_function_guide(average_beta=None, network=None):
    """``wrap_guide`` for the score-function estimators: the guide with reparameterization
    switched off and, optionally, a decaying-average and/or neural baseline at every latent site.
    The neural baseline's input is the guide's data argument (first positional or ``x=``),
    captured on each call."""

    def wrap_guide(guide):
        def guide_without_reparam(*args, **kwargs):
            handlers = [NoReparamMessenger()]
            if average_beta is not None or network is not None:
                inputs = args[0] if args else kwargs.get("x")
                handlers.append(
                    BaselineMessenger(average_beta=average_beta, network=network, inputs=inputs)
                )
            fn = guide
            for handler in handlers:
                fn = handler(fn)
            return fn(*args, **kwargs)

        return guide_without_reparam

    return wrap_guide


def _beta(baseline_beta) -> float:
    if not 0.0 <= float(baseline_beta) < 1.0:
        raise ConfigError(f"baseline_beta must be in [0, 1), got {baseline_beta}")
    return float(baseline_beta)


def _register(name, description, **flags):
    if name in available_objectives():  # re-import (e.g. importlib.reload): keep the first
        return lambda factory: factory
    return register_objective(name, description, **flags)


@_register("reparam", "Trace_ELBO with the reparameterized latent (pathwise gradient)",
           requires_reparam=True)
def _reparam(num_particles, vectorize_particles, **_):
    return Objective("reparam", pyro.infer.Trace_ELBO(**_elbo_kwargs(num_particles,
                                                                     vectorize_particles)))


@_register("analytic-kl", "TraceMeanField_ELBO: closed-form KL(q||p), pathwise reconstruction",
           requires_reparam=True)
def _analytic_kl(num_particles, vectorize_particles, **_):
    return Objective("analytic-kl", pyro.infer.TraceMeanField_ELBO(
        **_elbo_kwargs(num_particles, vectorize_particles)))


@_register("score", "TraceGraph_ELBO, reparameterization off: score function, no baseline")
def _score(num_particles, vectorize_particles, **_):
    return Objective(
        "score",
        pyro.infer.TraceGraph_ELBO(**_elbo_kwargs(num_particles, vectorize_particles)),
        wrap_guide=score_function_guide(),
    )


@_register("score-avg", "score function with a decaying-average baseline (baseline_beta=0.9)")
def _score_avg(num_particles, vectorize_particles, baseline_beta: float = 0.9, **_):
    return Objective(
        "score-avg",
        AverageBaselineTraceGraph_ELBO(**_elbo_kwargs(num_particles, vectorize_particles)),
        wrap_guide=score_function_guide(average_beta=_beta(baseline_beta)),
    )


@_register("score-nn", "score function with a learned neural baseline b(x) on top of the "
           "decaying average (NVIL, Mnih & Gregor 2014)")
def _score_nn(num_particles, vectorize_particles, x_dim: int | None = None,
              baseline_hidden: Sequence[int] = (100,), baseline_beta: float = 0.9, **_):
    network = NeuralBaseline(x_dim, baseline_hidden)
    return Objective(
        "score-nn",
        AverageBaselineTraceGraph_ELBO(**_elbo_kwargs(num_particles, vectorize_particles)),
        wrap_guide=score_function_guide(average_beta=_beta(baseline_beta), network=network),
        modules={"baseline": network},
    )


@_register("rws", f"reweighted wake-sleep, per-data-point weights (K={DEFAULT_RWS_PARTICLES} "
           "unless rws-K)", takes_k=True)
def _rws(num_particles, vectorize_particles, **_):
    k = num_particles if num_particles > 1 else DEFAULT_RWS_PARTICLES
    return Objective("rws", ReweightedWakeSleep(
        num_particles=k, vectorize_particles=vectorize_particles, max_plate_nesting=1))


@_register("stl", "sticking the landing: path-derivative ELBO gradient (Roeder et al. 2017)",
           requires_reparam=True)
def _stl(num_particles, vectorize_particles, **_):
    return Objective("stl", STL_ELBO(**_elbo_kwargs(num_particles, vectorize_particles)))


@_register("dreg", "doubly-reparameterized IWAE gradient, K = particles (Tucker et al. 2018)",
           takes_k=True, requires_reparam=True)
def _dreg(num_particles, vectorize_particles, **_):
    return Objective("dreg", DReG_ELBO(**_elbo_kwargs(num_particles, vectorize_particles)))
