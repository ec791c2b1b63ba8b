r"""The trace vocabulary: one answer, used everywhere, to the questions every estimator, objective
and analysis asks of a Pyro program.

* which sites are **latent** and which **observed** (:func:`is_latent`, :func:`is_observed`,
  :func:`latent_sites`, :func:`observed_sites`): a sample site is latent when it is not observed
  and is not a plate's subsample site — Pyro's :attr:`~pyro.poutine.Trace.stochastic_nodes` and
  :attr:`~pyro.poutine.Trace.observation_nodes` after
  :func:`~pyro.poutine.util.prune_subsample_sites`;
* a site's **mean** (:func:`site_mean`: the distribution's mean, or an explicit default where it
  has none) and **point estimate** (:func:`point_estimate`: the mean, through ``Independent``
  wrappers and the transforms of a flow);
* the **trainable tensors** of a Pyro callable (:func:`trainable_tensors`): its module
  parameters and what its ``param`` statements record;
* the **particle plate** (:data:`PARTICLES`, :func:`particle_plate`): the one vectorized plate
  under which K samples per data point are drawn, left of every plate of the program;
* **per-point log-probabilities** (:func:`per_point`, :func:`sum_log_prob`): a site's
  log-density reduced to shape ``(particles, data points)`` by summing every other plate and
  event dimension.

Every query works on the traces Pyro's own handlers make (``poutine.trace``); none relies on
our models' site names.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

__all__ = [
    "PARTICLES",
    "is_latent",
    "is_observed",
    "latent_sites",
    "observed_sites",
    "sample_sites",
    "latent_values",
    "particle_plate",
    "per_point",
    "param_site_tensors",
    "plate_nesting",
    "point_estimate",
    "site_mean",
    "sum_log_prob",
    "trainable_tensors",
]

#: The name of the particle plate (K samples per data point), in every module of ppl_vae.
PARTICLES = "_ppl_vae_particles"


# -- which sites ------------------------------------------------------------------------------
def is_latent(site) -> bool:
    """A sample site (or message) that is neither observed nor a plate's subsample site."""
    return site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)


def is_observed(site) -> bool:
    """An observed sample site (or message)."""
    return site["type"] == "sample" and bool(site["is_observed"])


def sample_sites(trace) -> dict:
    """``{name: site}`` of every sample site except subsample sites, in trace order."""
    return {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not
            site_is_subsample(s)}


def latent_sites(trace) -> dict:
    """``{name: site}`` of the latent sites of ``trace`` (:func:`is_latent`), in trace order."""
    trace = prune_subsample_sites(trace)
    return {name: trace.nodes[name] for name in trace.stochastic_nodes}


def observed_sites(trace) -> dict:
    """``{name: site}`` of the observed sites of ``trace``, in trace order."""
    return {name: trace.nodes[name] for name in trace.observation_nodes}


def latent_values(trace, detach: bool = True) -> dict:
    """``{name: value}`` of the latent sites of ``trace``."""
    return {n: s["value"].detach() if detach else s["value"]
            for n, s in latent_sites(trace).items()}


# -- site summaries -----------------------------------------------------------------------------
_NO_DEFAULT = object()


def site_mean(fn, default=_NO_DEFAULT) -> torch.Tensor:
    """The mean of the distribution ``fn``; where it has none (``NotImplementedError``), the
    given ``default`` (e.g. the site's drawn value, a one-sample estimate of the mean) or, with
    no default, ``NotImplementedError``. ``default`` may be a callable, called only then."""
    try:
        return fn.mean
    except NotImplementedError:
        if default is _NO_DEFAULT:
            raise NotImplementedError(f"{type(fn).__name__} has no mean") from None
        return default() if callable(default) else default


def point_estimate(fn) -> torch.Tensor:
    """A point summary of the distribution ``fn``: its mean where defined (:func:`site_mean`),
    looking through ``Independent`` wrappers; a ``TransformedDistribution`` (a normalizing flow,
    which has no closed-form mean) gives its transforms applied to the base distribution's point
    estimate; a ``Delta`` its value. Raises ``NotImplementedError`` where there is none (an
    improper distribution)."""
    import pyro.distributions as dist

    if isinstance(fn, dist.Independent):
        return point_estimate(fn.base_dist)
    try:
        return site_mean(fn)
    except NotImplementedError:
        if not isinstance(fn, dist.TransformedDistribution) and not hasattr(fn, "transforms"):
            raise
    z = point_estimate(fn.base_dist)
    for t in fn.transforms:
        z = t(z)
    return z


# -- parameters ---------------------------------------------------------------------------------
def _unconstrained(value):
    get = getattr(value, "unconstrained", None)
    return get() if callable(get) else value


def param_site_tensors(trace):
    """The value (unconstrained) and the initial tensor of every ``param`` site of ``trace``:
    for ``pyro.module`` the initial tensors are the module's own parameters, which its forward
    uses even when Pyro's global store holds a same-named tensor from an earlier model."""
    for site in trace.nodes.values():
        if site["type"] != "param":
            continue
        yield _unconstrained(site["value"])
        init = site["args"][1] if len(site["args"]) > 1 else None
        if torch.is_tensor(init):
            yield init


def trainable_tensors(fn, *args, **kwargs) -> list[torch.Tensor]:
    """The tensors a Pyro callable can be trained through, each once.

    The parameters of the ``nn.Module`` under ``fn``'s effect handlers (``poutine.unwrap``), and
    the tensors recorded by the ``param`` statements of one run of ``fn(*args, **kwargs)``
    (:func:`param_site_tensors`), that require a gradient. The run is made without gradients and
    with the RNG state restored.
    """
    from torch import nn

    out: dict[int, torch.Tensor] = {}
    root = poutine.unwrap(fn)
    if isinstance(root, nn.Module):
        out.update((id(p), p) for p in root.parameters())
    with torch.no_grad(), torch.random.fork_rng(devices=[]), poutine.block():
        trace = poutine.trace(fn, param_only=True).get_trace(*args, **kwargs)
    for t in param_site_tensors(trace):
        out.setdefault(id(t), t)
    return [t for t in out.values() if torch.is_tensor(t) and t.requires_grad]


# -- plates and per-point reductions ---------------------------------------------------------------
def plate_nesting(trace) -> int:
    """How many vectorized plate dimensions the sample sites of ``trace`` use."""
    dims = [-f.dim for s in trace.nodes.values() if s["type"] == "sample"
            for f in s["cond_indep_stack"] if f.vectorized and f.dim is not None]
    return max(dims, default=0)


def particle_plate(num_particles: int, max_plate_nesting: int) -> pyro.plate:
    """The particle plate: ``num_particles`` samples left of a program's ``max_plate_nesting``
    plate dimensions."""
    return pyro.plate(PARTICLES, int(num_particles), dim=-(int(max_plate_nesting) + 1))


def per_point(t: torch.Tensor, max_plate_nesting: int, data_dim: int,
              event_dim: int = 0) -> torch.Tensor:
    """Reduce a site-shaped tensor (particle plate left of ``max_plate_nesting`` plate dims) to
    shape ``(particles or 1, data or 1)``: sum the event dims and every plate but the data plate
    at ``data_dim``."""
    from ppl_vae.errors import ConfigError

    if event_dim:
        t = t.sum(dim=tuple(range(-event_dim, 0)))
    nb = int(max_plate_nesting) + 1
    if t.dim() < nb:
        t = t.reshape((1,) * (nb - t.dim()) + tuple(t.shape))
    elif t.dim() > nb:
        raise ConfigError(
            f"a site has batch shape {tuple(t.shape)} with more than max_plate_nesting + 1 = "
            f"{nb} dimensions; pass a larger max_plate_nesting")
    t = t.movedim(data_dim, -1)
    if nb > 2:
        t = t.flatten(1, -2).sum(1)
    return t


def sum_log_prob(trace, names, max_plate_nesting: int, data_dim: int, shape) -> torch.Tensor:
    """The sum over the sites ``names`` of ``trace`` (log-probabilities computed) of their
    per-point log-densities, broadcast to ``shape`` = (particles, data points)."""
    total = None
    for name in names:
        lp = per_point(trace.nodes[name]["log_prob"], max_plate_nesting, data_dim)
        total = lp if total is None else total + lp
    if total is None:
        raise ValueError("sum_log_prob needs at least one site")
    return torch.broadcast_to(total, shape)
