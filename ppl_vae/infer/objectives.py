"""The one registry of variational objectives, by name.

An *objective* is what SVI optimizes and what a gradient estimator estimates the gradient of: a
Pyro :class:`~pyro.infer.elbo.ELBO` (one class per module in :mod:`ppl_vae.infer`, or Pyro's own),
optionally with an effect handler applied to the guide and trainable modules of its own (a
neural baseline). Every name below trains with ``ppl-vae train --objective NAME``, is measured by
``ppl-vae grad-variance`` and compared by ``ppl-vae compare-estimators``; each works on *any* Pyro
model/guide pair whose plates Pyro's ELBOs accept (``max_plate_nesting`` is found by Pyro).

================ =================================== ==============================================
name             ELBO class                          gradient estimator
================ =================================== ==============================================
``trace``        ``Trace_ELBO``                      Monte Carlo ELBO; pathwise (reparameterized)
                                                     gradient, score function where a latent is not
                                                     reparameterizable; alias ``reparam``
``meanfield``    ``TraceMeanField_ELBO``             E_q log p(x|z) - KL(q||p), the KL in closed
                                                     form (Kingma & Welling 2014, App. B);
                                                     reparameterized latents only; alias
                                                     ``analytic-kl``
``tracegraph``   ``FastTraceGraph_ELBO``             score function Rao-Blackwellized with the
                                                     dependency graph (Williams 1992; Ranganath et
                                                     al. 2014): Pyro's ``TraceGraph_ELBO``, without
                                                     provenance tracking where the costs are the
                                                     whole log-weight per point
``score``        ``FastTraceGraph_ELBO``             score function on the *same* continuous latent
                                                     (reparameterization switched off by
                                                     :class:`~ppl_vae.infer.no_reparam.NoReparamMessenger`)
``score-avg``    ``AverageBaselineTraceGraph_ELBO``  ``score`` minus a decaying-average baseline
                                                     (option ``baseline_beta``)
``score-nn``     ``AverageBaselineTraceGraph_ELBO``  ``score`` minus the average plus a learned
                                                     b_psi(x) (NVIL, Mnih & Gregor 2014; options
                                                     ``x_dim``, ``baseline_hidden``,
                                                     ``baseline_beta``)
``iwae-K``       ``IWAE_ELBO``                       importance-weighted bound L_K (Burda et al.
                                                     2016)
``rws-K``        ``ReweightedWakeSleep``             reweighted wake-sleep (Bornschein & Bengio
                                                     2015); K >= 2
``stl``          ``STL_ELBO``                        sticking the landing (Roeder et al. 2017)
``dreg-K``       ``DReG_ELBO``                       doubly-reparameterized IWAE gradient (Tucker
                                                     et al. 2018)
``enum``         ``TraceEnum_ELBO``                  discrete sites marked for parallel enumeration
                                                     (``config_enumerate``) summed out exactly, the
                                                     others as ``trace``
``ws``           ``WakeSleep``                       wake-sleep: wake-theta on z ~ q(z|x),
                                                     sleep-phi on dreams (z, x) ~ p (Hinton et al.
                                                     1995); alias ``wake-sleep``
``score-loo-K``  ``ReinforceLOO``                    score function with the leave-one-out baseline
                                                     over K >= 2 samples (Kool et al. 2019)
``vimco-K``      ``VIMCO``                           L_K with leave-one-out geometric-mean learning
                                                     signals (Mnih & Rezende 2016); K >= 2
``arm-K``        ``ARM``                             augment-REINFORCE-merge, K antithetic pairs,
                                                     Bernoulli sites (Yin & Zhou 2019)
``disarm-K``     ``DisARM``                          ARM with the noise integrated out (Dong, Mnih
                                                     & Tucker 2020)
``gumbel-K``     ``GumbelSoftmax``                   binary Concrete relaxation, option
                                                     ``temperature`` (0.5); BIASED (Maddison et al.
                                                     2017; Jang et al. 2017)
``gumbel-st-K``  ``GumbelSoftmax``                   straight-through Gumbel (``temperature`` 1.0);
                                                     BIASED
``rebar-K``      ``REBAR``                           REINFORCE with the Concrete control variate,
                                                     fixed ``eta`` (1.0) and ``temperature`` (0.5)
                                                     (Tucker et al. 2017)
``relax-K``      ``RELAX``                           REBAR's estimator with a learned control
                                                     variate eta f(sigma(z/lambda)) + r(x, z)
                                                     (objective module ``control_variate``)
                                                     trained to minimize the estimate's variance
                                                     (Grathwohl et al. 2018); options
                                                     ``temperature``, ``eta`` (initial values),
                                                     ``control_hidden`` (137,),
                                                     ``control_network`` (False: REBAR with eta,
                                                     lambda tuned online), ``variance``
================ =================================== ==============================================

What an objective can do is a property of its ELBO class, read by :func:`can_infer_discrete`
(``can_infer_discrete``, as in NumPyro): whether it gives correct gradients when a latent guide
site is not reparameterizable (a sigmoid belief network's Bernoulli latents). A ``-K`` suffix sets
the particle count of names that take one (``iwae-5``); names without a suffix use the objective's
default (1, or 5 for ``rws``). Factories reject options they do not take and impossible particle
counts (``rws-1``). An objective whose gradient is *biased* for its own objective (the relaxed
estimators) declares ``biased = True`` on its ELBO class, read by :func:`is_biased`; what it
estimates the gradient *of*, biased or not, is the registry's ``target``, read by
:func:`target_of`: the ELBO, except the L_K estimators (``iwae-K``, ``dreg-K``, ``vimco-K``:
``L_K``; ``rws-K``: L_K for the model, wake-phi for the guide) and ``ws``. The names
after ``ws`` (the discrete-latent estimators) are not in the default comparison list
(``compare=False``); :mod:`benchmarks.sbn_estimators` compares them on the sigmoid belief
network.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pyro.infer
from torch import nn

from ppl_vae.errors import ConfigError
from ppl_vae.infer.arm import ARM
from ppl_vae.infer.baselines import (
    AverageBaselineTraceGraph_ELBO,
    NeuralBaseline,
    score_function_guide,
)
from ppl_vae.infer.disarm import DisARM
from ppl_vae.infer.dreg_elbo import DReG_ELBO
from ppl_vae.infer.gumbel_softmax import GumbelSoftmax
from ppl_vae.infer.iwae_elbo import IWAE_ELBO
from ppl_vae.infer.rebar import REBAR
from ppl_vae.infer.reinforce_loo import ReinforceLOO
from ppl_vae.infer.relax import RELAX, RelaxControlVariate
from ppl_vae.infer.rws import ReweightedWakeSleep
from ppl_vae.infer.stl_elbo import STL_ELBO
from ppl_vae.infer.tracegraph_elbo import FastTraceGraph_ELBO
from ppl_vae.infer.vimco import VIMCO
from ppl_vae.infer.wake_sleep import WakeSleep

__all__ = [
    "Objective",
    "ObjectiveSpec",
    "available_objectives",
    "can_infer_discrete",
    "comparison_objectives",
    "is_biased",
    "make_objective",
    "objective_spec",
    "parse_objective_list",
    "register_objective",
    "target_of",
]

# Pyro's own ELBO classes carry no capability flag; this is what their code does. Trace_ELBO and
# TraceGraph_ELBO add score-function terms for non-reparameterized sites; TraceMeanField_ELBO
# calls check_fully_reparametrized; RenyiELBO adds score-function terms too. Our classes in
# ppl_vae.infer declare ``can_infer_discrete`` themselves.
_PYRO_CAN_INFER_DISCRETE = {
    pyro.infer.TraceMeanField_ELBO: False,
    pyro.infer.Trace_ELBO: True,
    pyro.infer.TraceGraph_ELBO: True,
    pyro.infer.TraceEnum_ELBO: True,
    pyro.infer.RenyiELBO: True,
}


def can_infer_discrete(elbo) -> bool:
    """Whether the ELBO class (or instance) ``elbo`` gives correct gradients for latent sites
    that are not reparameterizable. Read from the class attribute ``can_infer_discrete`` where
    the class declares one, else from what Pyro's base class does."""
    cls = elbo if isinstance(elbo, type) else type(elbo)
    for klass in cls.__mro__:
        if "can_infer_discrete" in vars(klass):
            return bool(klass.can_infer_discrete)
        if klass in _PYRO_CAN_INFER_DISCRETE:
            return _PYRO_CAN_INFER_DISCRETE[klass]
    return False


def is_biased(elbo) -> bool:
    """Whether the ELBO class (or instance) ``elbo`` declares its gradient estimate biased for
    the objective it reports (class attribute ``biased``; False where none is declared)."""
    cls = elbo if isinstance(elbo, type) else type(elbo)
    return bool(getattr(cls, "biased", False))


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

    @property
    def can_infer_discrete(self) -> bool:
        return can_infer_discrete(self.elbo)

    @property
    def biased(self) -> bool:
        return is_biased(self.elbo)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """-objective estimate (a float); accumulates the gradient estimate into ``.grad``."""
        try:
            return self.elbo.loss_and_grads(model, self.wrap_guide(guide), *args, **kwargs)
        except KeyError as exc:
            raise self._model_only_site(exc) from None

    def loss(self, model, guide, *args, **kwargs) -> float:
        """-objective estimate, without gradients."""
        try:
            return self.elbo.loss(model, self.wrap_guide(guide), *args, **kwargs)
        except KeyError as exc:
            raise self._model_only_site(exc) from None

    def _model_only_site(self, exc: KeyError) -> Exception:
        """Pyro's ELBOs look up every model latent in the guide trace: one line instead."""
        name = exc.args[0] if exc.args else "?"
        return ConfigError(
            f"objective {self.name!r}: the model's latent site {name!r} has no guide site; "
            "give the guide one, or mark it for enumeration (config_enumerate) and use the "
            "'enum' objective")


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective.

    ``factory(num_particles, vectorize_particles, **options)`` builds the
    :class:`Objective`; its keyword parameters are the objective's ``options``. ``elbo_class`` is
    the ELBO it builds (its capability flags describe the objective). ``takes_k``: the name may
    carry a particle count (``iwae-5``), ``default_particles`` is used without one, and fewer
    than ``min_particles`` is refused. ``compare``: part of the default list of
    :func:`comparison_objectives`. ``target``: the objective whose gradient the estimator
    estimates (``"ELBO"``; ``"L_K"`` with K the particle count; see :func:`target_of`).
    """

    name: str
    factory: Callable[..., Objective]
    elbo_class: type
    description: str
    aliases: tuple[str, ...] = ()
    takes_k: bool = False
    default_particles: int = 1
    min_particles: int = 1
    compare: bool = True
    target: str = "ELBO"

    @property
    def options(self) -> tuple[str, ...]:
        params = list(inspect.signature(self.factory).parameters.values())[2:]
        return tuple(p.name for p in params)

    @property
    def can_infer_discrete(self) -> bool:
        return can_infer_discrete(self.elbo_class)

    @property
    def biased(self) -> bool:
        return is_biased(self.elbo_class)


_REGISTRY: dict[str, ObjectiveSpec] = {}
_ALIASES: dict[str, str] = {}


def register_objective(name: str, elbo_class: type, description: str, *,
                       aliases: Sequence[str] = (), takes_k: bool = False,
                       default_particles: int = 1, min_particles: int = 1,
                       compare: bool = True, target: str = "ELBO"):
    """Decorator registering ``factory(num_particles, vectorize_particles, **options)`` under
    ``name`` and ``aliases``. A name that is already taken raises ``ValueError``."""

    def deco(factory):
        for n in (name, *aliases):
            if n in _REGISTRY or n in _ALIASES:
                raise ValueError(f"objective name {n!r} is already registered")
        _REGISTRY[name] = ObjectiveSpec(name, factory, elbo_class, description, tuple(aliases),
                                        takes_k, default_particles, min_particles, compare,
                                        target)
        _ALIASES.update({a: name for a in aliases})
        return factory

    return deco


def available_objectives(aliases: bool = False) -> list[str]:
    """Registered names in registration order (with ``aliases=True``, the aliases too)."""
    return list(_REGISTRY) + (list(_ALIASES) if aliases else [])


def comparison_objectives(k: int = 5) -> list[str]:
    """The default list of the gradient-estimator comparisons: every registered objective with
    ``compare=True``, with particle count ``k`` where the name takes one."""
    return [f"{s.name}-{k}" if s.takes_k else s.name for s in _REGISTRY.values() if s.compare]


def _parse(name: str) -> tuple[ObjectiveSpec, int | None]:
    base = _ALIASES.get(name, name)
    if base in _REGISTRY:
        return _REGISTRY[base], None
    m = re.fullmatch(r"(.+)-(\d+)", name)
    if m:
        base = _ALIASES.get(m.group(1), m.group(1))
        if base in _REGISTRY and _REGISTRY[base].takes_k:
            return _REGISTRY[base], int(m.group(2))
    raise ConfigError(
        f"unknown objective {name!r}; choose one of {', '.join(available_objectives())} "
        f"(aliases: {', '.join(f'{a}={b}' for a, b in _ALIASES.items())}; names that take a "
        "particle count accept -K, e.g. iwae-5)"
    )


def objective_spec(name: str) -> ObjectiveSpec:
    """The :class:`ObjectiveSpec` for ``name`` (an alias or ``iwae-5`` resolve to theirs)."""
    return _parse(name)[0]


def target_of(name: str, num_particles: int | None = None) -> str:
    """The objective whose gradient ``name`` estimates (biased or not): ``"ELBO"``, ``"L_5"``
    for ``iwae-5`` (the registry's ``"L_K"`` with the particle count as
    :func:`make_objective` resolves it from ``name`` and ``num_particles``; L_1 is the ELBO),
    ``"L_5, wake-phi"`` for ``rws-5`` (wake-theta ascends L_K, wake-phi ascends no bound),
    ``"wake-sleep"`` for ``ws``. Two estimators' mean gradients should agree only if their
    targets are equal."""
    spec, k = _parse(name)
    if k is None:
        k = spec.default_particles if num_particles is None else int(num_particles)
    return spec.target.replace("L_K", "ELBO" if k == 1 else f"L_{k}")


def parse_objective_list(text: str | Sequence[str]) -> list[str]:
    """``"trace,iwae-5"`` -> ``["trace", "iwae-5"]``, each name checked against the registry."""
    names = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise ConfigError("give at least one objective name")
    for n in names:
        _parse(n)
    return names


def make_objective(name: str, num_particles: int | None = None, vectorize_particles: bool = True,
                   *, x_dim: int | None = None, **options) -> Objective:
    """Build the objective registered as ``name``.

    ``num_particles``: samples per data point; a ``-K`` suffix in ``name`` sets it too (the two
    must agree); ``None`` means the objective's default. ``x_dim``: the number of features of a
    data point, a fact about the data that objectives with input-dependent parts (the neural
    baseline of ``score-nn``) use and the others ignore. ``options``: the objective's own
    options. Raises :class:`ConfigError` for an unknown name, an option the objective does not
    take, or an impossible particle count.
    """
    spec, k = _parse(name)
    if k is not None and num_particles is not None and int(num_particles) not in (1, k):
        raise ConfigError(f"objective {name!r} fixes K={k} but num_particles={num_particles}")
    n = int(k if k is not None else
            (num_particles if num_particles is not None else spec.default_particles))
    if n < spec.min_particles:
        raise ConfigError(f"objective {name!r} needs at least {spec.min_particles} particles, "
                          f"got {n}" + (f" (use {spec.name}-K with K >= {spec.min_particles})"
                                        if spec.takes_k else ""))
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        takes = ", ".join(spec.options) or "none"
        raise ConfigError(f"objective {name!r} takes no option {', '.join(map(repr, unknown))} "
                          f"(its options: {takes})")
    if x_dim is not None and "x_dim" in spec.options:
        options.setdefault("x_dim", int(x_dim))
    obj = spec.factory(n, vectorize_particles, **options)
    obj.name = name
    return obj


def elbo_options(num_particles: int, vectorize_particles: bool) -> dict:
    """Keyword arguments of Pyro's ELBO constructors. ``max_plate_nesting`` is left to Pyro,
    which finds it from a first trace, so any plate structure Pyro accepts works."""
    return dict(num_particles=num_particles,
                vectorize_particles=bool(vectorize_particles and num_particles > 1))


def _beta(baseline_beta) -> float:
    if not 0.0 <= float(baseline_beta) < 1.0:
        raise ConfigError(f"baseline_beta must be in [0, 1), got {baseline_beta}")
    return float(baseline_beta)


@register_objective("trace", pyro.infer.Trace_ELBO,
                    "Trace_ELBO: Monte Carlo ELBO, reparameterized gradient", aliases=("reparam",))
def _trace(num_particles, vectorize_particles):
    return Objective("trace", pyro.infer.Trace_ELBO(**elbo_options(num_particles,
                                                                   vectorize_particles)))


@register_objective("meanfield", pyro.infer.TraceMeanField_ELBO,
                    "TraceMeanField_ELBO: closed-form KL(q||p) where available",
                    aliases=("analytic-kl",))
def _meanfield(num_particles, vectorize_particles):
    return Objective("meanfield", pyro.infer.TraceMeanField_ELBO(
        **elbo_options(num_particles, vectorize_particles)))


@register_objective("tracegraph", FastTraceGraph_ELBO,
                    "TraceGraph_ELBO: Rao-Blackwellized score function for non-reparameterizable "
                    "sites", compare=False)  # on reparameterized latents it is `trace`
def _tracegraph(num_particles, vectorize_particles):
    return Objective("tracegraph", FastTraceGraph_ELBO(
        **elbo_options(num_particles, vectorize_particles)))


@register_objective("enum", pyro.infer.TraceEnum_ELBO,
                    "TraceEnum_ELBO: discrete sites marked for enumeration (config_enumerate) "
                    "summed out exactly, the others as Trace_ELBO", compare=False)
def _enum(num_particles, vectorize_particles):
    return Objective("enum", pyro.infer.TraceEnum_ELBO(
        **elbo_options(num_particles, vectorize_particles)))


@register_objective("score", FastTraceGraph_ELBO,
                    "TraceGraph_ELBO, reparameterization off: score function, no baseline")
def _score(num_particles, vectorize_particles):
    return Objective("score", FastTraceGraph_ELBO(
        **elbo_options(num_particles, vectorize_particles)), wrap_guide=score_function_guide())


@register_objective("score-avg", AverageBaselineTraceGraph_ELBO,
                    "score function with a decaying-average baseline (baseline_beta=0.9)")
def _score_avg(num_particles, vectorize_particles, baseline_beta: float = 0.9):
    return Objective(
        "score-avg",
        AverageBaselineTraceGraph_ELBO(**elbo_options(num_particles, vectorize_particles)),
        wrap_guide=score_function_guide(average_beta=_beta(baseline_beta)),
    )


@register_objective("score-nn", AverageBaselineTraceGraph_ELBO,
                    "score function with a learned neural baseline b(x) on top of the decaying "
                    "average (NVIL, Mnih & Gregor 2014)")
def _score_nn(num_particles, vectorize_particles, x_dim: int | None = None,
              baseline_hidden: Sequence[int] = (100,), baseline_beta: float = 0.9):
    network = NeuralBaseline(x_dim, baseline_hidden)
    return Objective(
        "score-nn",
        AverageBaselineTraceGraph_ELBO(**elbo_options(num_particles, vectorize_particles)),
        wrap_guide=score_function_guide(average_beta=_beta(baseline_beta), network=network),
        modules={"baseline": network},
    )


@register_objective("iwae", IWAE_ELBO,
                    "importance-weighted bound L_K, K = particles (Burda et al. 2016)",
                    takes_k=True, target="L_K")
def _iwae(num_particles, vectorize_particles):
    return Objective("iwae", IWAE_ELBO(**elbo_options(num_particles, vectorize_particles)))


@register_objective("rws", ReweightedWakeSleep,
                    "reweighted wake-sleep, per-data-point weights (K=5 unless rws-K, K >= 2)",
                    takes_k=True, default_particles=5, min_particles=2, target="L_K, wake-phi")
def _rws(num_particles, vectorize_particles):
    return Objective("rws", ReweightedWakeSleep(num_particles=num_particles,
                                                vectorize_particles=vectorize_particles))


@register_objective("stl", STL_ELBO,
                    "sticking the landing: path-derivative ELBO gradient (Roeder et al. 2017)")
def _stl(num_particles, vectorize_particles):
    return Objective("stl", STL_ELBO(**elbo_options(num_particles, vectorize_particles)))


@register_objective("dreg", DReG_ELBO,
                    "doubly-reparameterized IWAE gradient, K = particles (Tucker et al. 2018)",
                    takes_k=True, target="L_K")
def _dreg(num_particles, vectorize_particles):
    return Objective("dreg", DReG_ELBO(**elbo_options(num_particles, vectorize_particles)))


@register_objective("ws", WakeSleep,
                    "wake-sleep: wake-theta ascends log p(x,z), z ~ q(z|x); sleep-phi ascends "
                    "log q(z|x) on dreams (z,x) ~ p (Hinton et al. 1995)",
                    aliases=("wake-sleep",), compare=False, target="wake-sleep")
def _ws(num_particles, vectorize_particles, observed: str = "x"):
    return Objective("ws", WakeSleep(num_particles=num_particles, observed=observed))


# --- gradient estimators for discrete (Bernoulli) latents ----------------------------------------


@register_objective("score-loo", ReinforceLOO,
                    "score function with the leave-one-out baseline over K >= 2 samples (Kool "
                    "et al. 2019); K=2 unless score-loo-K",
                    takes_k=True, default_particles=2, min_particles=2, compare=False)
def _score_loo(num_particles, vectorize_particles):
    return Objective("score-loo", ReinforceLOO(num_particles=num_particles,
                                               vectorize_particles=vectorize_particles))


@register_objective("vimco", VIMCO,
                    "VIMCO: L_K with leave-one-out geometric-mean learning signals (Mnih & "
                    "Rezende 2016); K=2 unless vimco-K",
                    takes_k=True, default_particles=2, min_particles=2, compare=False,
                    target="L_K")
def _vimco(num_particles, vectorize_particles):
    return Objective("vimco", VIMCO(num_particles=num_particles,
                                    vectorize_particles=vectorize_particles))


@register_objective("arm", ARM,
                    "ARM for Bernoulli sites, K antithetic pairs (Yin & Zhou 2019); 1 pair unless "
                    "arm-K", takes_k=True, compare=False)
def _arm(num_particles, vectorize_particles):
    return Objective("arm", ARM(num_particles=num_particles,
                                vectorize_particles=vectorize_particles))


@register_objective("disarm", DisARM,
                    "DisARM for Bernoulli sites, K antithetic pairs (Dong, Mnih & Tucker 2020); "
                    "1 pair unless disarm-K", takes_k=True, compare=False)
def _disarm(num_particles, vectorize_particles):
    return Objective("disarm", DisARM(num_particles=num_particles,
                                      vectorize_particles=vectorize_particles))


def _temperature(temperature) -> float:
    if not float(temperature) > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    return float(temperature)


@register_objective("gumbel", GumbelSoftmax,
                    "binary Concrete / Gumbel-softmax relaxation of Bernoulli sites (Maddison et "
                    "al. 2017; Jang et al. 2017), temperature=0.5; biased",
                    takes_k=True, compare=False)
def _gumbel(num_particles, vectorize_particles, temperature: float = 0.5):
    return Objective("gumbel", GumbelSoftmax(num_particles=num_particles,
                                             temperature=_temperature(temperature),
                                             vectorize_particles=vectorize_particles))


@register_objective("gumbel-st", GumbelSoftmax,
                    "straight-through Gumbel estimator of Bernoulli sites (Jang et al. 2017), "
                    "temperature=1.0; biased", takes_k=True, compare=False)
def _gumbel_st(num_particles, vectorize_particles, temperature: float = 1.0):
    return Objective("gumbel-st", GumbelSoftmax(num_particles=num_particles,
                                                temperature=_temperature(temperature),
                                                straight_through=True,
                                                vectorize_particles=vectorize_particles))


@register_objective("rebar", REBAR,
                    "REBAR for Bernoulli sites with fixed eta=1.0 and temperature=0.5 (Tucker et "
                    "al. 2017); 3 model evaluations per sample", takes_k=True, compare=False)
def _rebar(num_particles, vectorize_particles, temperature: float = 0.5, eta: float = 1.0):
    return Objective("rebar", REBAR(num_particles=num_particles,
                                    temperature=_temperature(temperature), eta=float(eta),
                                    vectorize_particles=vectorize_particles))


@register_objective("relax", RELAX,
                    "RELAX for Bernoulli sites: REBAR's estimator with a learned control variate "
                    "trained to minimize the variance (Grathwohl et al. 2018); 3 model "
                    "evaluations per sample and a second-order backward pass",
                    takes_k=True, compare=False)
def _relax(num_particles, vectorize_particles, temperature: float = 0.5, eta: float = 1.0,
           control_hidden: Sequence[int] = (137,), control_network: bool = True,
           variance: str = "parameters"):
    if variance not in ("parameters", "logits"):
        raise ConfigError(f"variance must be 'parameters' or 'logits', got {variance!r}")
    cv = RelaxControlVariate(_temperature(temperature), float(eta), control_hidden,
                             bool(control_network))
    return Objective("relax", RELAX(num_particles=num_particles, control_variate=cv,
                                    variance=variance, vectorize_particles=vectorize_particles),
                     modules={"control_variate": cv})
