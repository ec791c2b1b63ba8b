"""Trace utilities shared by the estimators in :mod:`ppl_vae.infer`."""

from __future__ import annotations

import copy

import torch
from pyro.distributions.score_parts import ScoreParts
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from torch.distributions import Distribution

__all__ = [
    "detach_distribution",
    "is_reparameterized_latent",
    "rescore_with_detached_parameters",
    "particle_log_weights",
    "data_scale",
]


def detach_distribution(fn: Distribution) -> Distribution:
    """A shallow copy of ``fn`` whose tensor attributes (its parameters, and cached derived
    quantities) are detached, recursing into wrapped distributions (``base_dist``).

    Restriction: parameters held outside the distribution's own attributes or nested
    distributions (e.g. inside the ``transforms`` of a TransformedDistribution, such as a
    normalizing flow's networks) are not detached; for such sites the estimators below fall back
    to the ordinary (still unbiased) gradient for those parameters.
    """
    new = copy.copy(fn)
    for key, value in vars(fn).items():
        if torch.is_tensor(value):
            new.__dict__[key] = value.detach()
        elif isinstance(value, Distribution):
            new.__dict__[key] = detach_distribution(value)
    return new


def is_reparameterized_latent(site) -> bool:
    """True for a latent guide sample site drawn with ``rsample``."""
    return (
        site["type"] == "sample"
        and not site["is_observed"]
        and bool(getattr(site["fn"], "has_rsample", False))
    )


def rescore_with_detached_parameters(guide_trace) -> None:
    """In place: give every reparameterized latent site of a scored guide trace the log-density
    log q_{stop_grad(phi)}(z | x) of its (still differentiable) value z.

    Numerically nothing changes; only the gradient of log q w.r.t. the variational parameters
    phi is removed, leaving the path derivative through z (Roeder et al. 2017). The site's
    ``score_parts`` become ``(log_prob, 0, log_prob)``: a fully reparameterized entropy term.
    """
    for site in guide_trace.nodes.values():
        if not is_reparameterized_latent(site):
            continue
        unscaled = detach_distribution(site["fn"]).log_prob(site["value"])
        log_prob = scale_and_mask(unscaled, site["scale"], site["mask"])
        site["unscaled_log_prob"] = unscaled
        site["log_prob"] = log_prob
        site["log_prob_sum"] = log_prob.sum()
        site["score_parts"] = ScoreParts(log_prob=log_prob, score_function=0, entropy_term=log_prob)


def data_scale(model_trace) -> float:
    """The subsampling scale of the observed sites (N / batch size under a subsampled data plate,
    else 1), which must be common to them.

    Importance-weighted bounds form their log-weights from log-densities divided by this scale
    and rescale the bound afterwards: log (1/K) sum_k w_k is not linear in the log-weights, so the
    scale must stay outside the log-mean-exp. Latent sites whose scale differs from it (e.g. a
    KL-annealing factor beta on the latents) keep the ratio as a weight on their log-density.
    """
    scales = []
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            s = site["scale"]
            if torch.is_tensor(s) and s.numel() != 1:
                raise NotImplementedError("importance-weighted bounds need scalar site scales")
            scales.append(float(s))
    if not scales:
        return 1.0
    if max(scales) - min(scales) > 1e-6 * max(scales):
        raise NotImplementedError(
            "importance-weighted bounds need every observed site to have the same subsampling "
            f"scale; got scales {sorted(set(scales))}"
        )
    return scales[0]


def particle_log_weights(model_trace, guide_trace, scale):
    """Per-particle, per-data-point log importance weights log p(x, z) - log q(z | x).

    Uses the scaled log-densities divided by ``scale`` (i.e. the unscaled, masked ones), and
    sums every plate that is not shared by all sites, as :class:`pyro.infer.RenyiELBO` does; the
    shared plates (the data plate and, if vectorized, the particle plate) are kept. Returns
    ``(log_p, log_q)`` so that callers can detach either.
    """
    sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
    log_p = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            log_p = log_p + torch_sum(site["log_prob"], sum_dims)
    log_q = 0.0
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            log_q = log_q + torch_sum(site["log_prob"], sum_dims)
    return log_p / scale, log_q / scale
