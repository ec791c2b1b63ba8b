r"""The importance-sampling engine: log weights log p(x, z) - log q(z | x) of a model/guide pair.

Every importance weight in ppl_vae comes from here: the marginal-likelihood estimators
(:mod:`ppl_vae.marginal`), imputation, the mixture proposals of the posterior analysis, and the
multi-sample objectives (:class:`~ppl_vae.infer.iwae_elbo.IWAE_ELBO`,
:class:`~ppl_vae.infer.rws.ReweightedWakeSleep`).

For K particles :math:`z_k \sim q(z \mid x)` drawn in one vectorized particle plate
(:func:`~ppl_vae.poutine.trace.particle_plate`) and the model replayed on them,

.. math::

    \log w_k = \sum_{s \in \text{model}} \log p_s(\cdot_k) - \sum_{s \in \text{latent}(q)}
        \log q_s(z_{s,k}),

where the first sum runs over every sample site of the model (latent and observed) and the
second over the guide's latent sites (:mod:`ppl_vae.poutine.trace`). Each site's log-density
is reduced by a caller-given ``reduce`` (sum every plate but the ones the caller keeps). With
no guide the proposal is the prior and :math:`\log w_k = \sum_{s\ \text{observed}} \log p_s`.

**Enumeration.** Discrete sites marked for parallel enumeration (``config_enumerate``, or
``infer={"enumerate": "parallel"}``), in the model or in the guide, are summed out exactly
inside each importance sample instead of being sampled: with :math:`y` the enumerated sites,

.. math::

    w_k = \sum_y \frac{p(x, y, z_k)}{q(z_k \mid x, y)}, \qquad z_k \sim q(z \mid x, y),

an unbiased estimate of :math:`p(x)` whose variance comes from the other latents only (exact
when every latent is enumerated). The guide's factor :math:`q(y \mid x)` cancels. Each
enumerated site must sit in no plate but the data plate (its values for different points are
summed independently).
"""

from __future__ import annotations

import torch
from pyro import poutine

from ppl_vae.errors import ConfigError
from ppl_vae.poutine.trace import (
    PARTICLES,
    latent_sites,
    observed_sites,
    particle_plate,
    sample_sites,
)

__all__ = ["check_same_latents", "enumerated_sites", "log_weights", "replayed_log_q",
           "sample_particles", "importance_log_weights"]


def _marked(site) -> bool:
    return site["infer"].get("enumerate") == "parallel"


def enumerated_sites(model_trace, guide_trace=None) -> set:
    """Names of the latent sites summed out by enumeration: the guide's marked latent sites,
    and the model's marked latent sites the guide does not sample."""
    guide = latent_sites(guide_trace) if guide_trace is not None else {}
    names = {n for n, s in guide.items() if _marked(s)}
    names |= {n for n, s in latent_sites(model_trace).items() if _marked(s) and n not in guide}
    return names


def check_same_latents(model_trace, guide_trace) -> None:
    """One line when the guide's latent sites differ from the model's (sites the model
    enumerates need no guide site)."""
    g = set(latent_sites(guide_trace))
    m = {n for n, s in latent_sites(model_trace).items() if n in g or not _marked(s)}
    if m != g:
        raise ConfigError(f"the guide's latent sites {sorted(g)} differ from the model's "
                          f"{sorted(m)} (stochastic control flow?)")


def _total(sites, reduce):
    total = 0.0
    for site in sites.values():
        total = total + reduce(site["log_prob"])
    return total


def log_weights(model_trace, guide_trace, reduce):
    """``(log_p, log_q)`` of traces whose log-probabilities are computed.

    ``log_p`` sums every model sample site, ``log_q`` the guide's latent sites, each reduced by
    ``reduce(site_log_prob)``. With ``guide_trace=None`` (the prior as proposal) ``log_p`` sums
    the observed sites only and ``log_q`` is 0.
    """
    if guide_trace is None:
        return _total(observed_sites(model_trace), reduce), 0.0
    return _total(sample_sites(model_trace), reduce), _total(latent_sites(guide_trace), reduce)


def sample_particles(model, guide, args, kwargs, num_particles: int, max_plate_nesting: int,
                     guide_args=None):
    """Draw ``num_particles`` particles in the particle plate: ``(model_trace, guide_trace)``
    with log-probabilities computed (the model's on every site, the guide's on its latents).

    ``guide=None`` draws from the prior (``guide_trace`` is then None). ``guide_args``: other
    positional arguments for the guide (e.g. imputation's filled-in data).
    """
    with particle_plate(num_particles, max_plate_nesting), \
            poutine.enum(first_available_dim=-(max_plate_nesting + 2)):
        if guide is None:
            model_trace = poutine.trace(model).get_trace(*args, **kwargs)
            guide_trace = None
        else:
            gargs = args if guide_args is None else guide_args
            guide_trace = poutine.trace(guide).get_trace(*gargs, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs)
    if guide_trace is None:
        model_trace.compute_log_prob(lambda name, site: site["is_observed"] or _marked(site))
    else:
        check_same_latents(model_trace, guide_trace)
        latent = latent_sites(guide_trace)
        guide_trace.compute_log_prob(lambda name, site: name in latent)
        model_trace.compute_log_prob()
    return model_trace, guide_trace


def replayed_log_q(guide, trace, args, kwargs, num_particles: int, max_plate_nesting: int,
                   reduce):
    """log q(z) of another proposal ``guide`` at the latent values of ``trace`` (drawn by a
    proposal with the same latent sites), reduced by ``reduce``."""
    with particle_plate(num_particles, max_plate_nesting):
        other = poutine.trace(poutine.replay(guide, trace=trace)).get_trace(*args, **kwargs)
    latent = latent_sites(other)
    other.compute_log_prob(lambda name, site: name in latent)
    return _total(latent, reduce)


def importance_log_weights(model, guide, args, kwargs, num_particles: int,
                           max_plate_nesting: int, reduce, guide_args=None,
                           data_dim: int = -1) -> torch.Tensor:
    """``log p - log q`` of :func:`sample_particles` (see :func:`log_weights`), with enumerated
    sites summed out (module docstring; ``data_dim``: the data plate's dimension)."""
    model_trace, guide_trace = sample_particles(model, guide, args, kwargs, num_particles,
                                                max_plate_nesting, guide_args)
    enumerated = enumerated_sites(model_trace, guide_trace)
    if enumerated:
        return _enumerated_log_weights(model_trace, guide_trace, enumerated, max_plate_nesting,
                                       data_dim)
    log_p, log_q = log_weights(model_trace, guide_trace, reduce)
    return log_p - log_q


def _enumerated_log_weights(model_trace, guide_trace, enumerated, nesting, data_dim):
    """log w with the enumerated sites' dimensions (left of the particle plate) summed out by
    log-sum-exp after every other plate but the data plate is summed."""
    for name in enumerated:
        site = (guide_trace if guide_trace is not None and name in guide_trace.nodes
                else model_trace).nodes[name]
        plates = [f.name for f in site["cond_indep_stack"] if f.vectorized
                  and f.dim != data_dim and f.name != PARTICLES]
        if plates:
            raise NotImplementedError(
                f"enumerated site {name!r} is inside plate(s) {plates} besides the data plate; "
                "the log-likelihood estimators sum out only per-point enumerated sites")
    if guide_trace is None:
        terms = [s["log_prob"] for n, s in sample_sites(model_trace).items()
                 if s["is_observed"] or n in enumerated]
    else:
        terms = [s["log_prob"] for s in sample_sites(model_trace).values()]
        terms += [-s["log_prob"] for n, s in latent_sites(guide_trace).items()
                  if n not in enumerated]
    nb = nesting + 1
    m = max(t.dim() for t in terms) - nb  # enumeration dimensions
    keep = {0, nb + data_dim}  # the particle and data dims among the trailing nb
    total = 0.0
    for t in terms:
        t = t.reshape((1,) * (m + nb - t.dim()) + tuple(t.shape))
        dims = [m + i for i in range(nb) if i not in keep]
        total = total + (t.sum(dims, keepdim=True) if dims else t)
    total = torch.logsumexp(total.reshape(-1, *total.shape[m:]), 0) if m > 0 else total
    return total.reshape(total.shape[0], -1) if nb > 1 else total.reshape(-1, 1)
