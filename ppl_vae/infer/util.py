"""Trace utilities shared by the estimators in :mod:`ppl_vae.infer`."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from pyro import poutine
from pyro.distributions.score_parts import ScoreParts
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.messenger import Messenger
from torch import nn

from ppl_vae.infer.importance import log_weights
from ppl_vae.poutine.trace import is_latent, is_observed, param_site_tensors

__all__ = [
    "detached_parameters",
    "is_reparameterized_latent",
    "rescore_with_detached_parameters",
    "particle_log_weights",
    "data_scale",
]


class _DetachParams(Messenger):
    """Detach the value of every ``param`` statement (``pyro.param``, PyroModule ``PyroParam``)."""

    def _pyro_post_param(self, msg):
        if torch.is_tensor(msg["value"]):
            msg["value"] = msg["value"].detach()


@contextmanager
def detached_parameters(guide, *others, trace=None):
    """Within the block, ``guide`` computes its distributions from parameters held fixed.

    Every tensor the guide can be trained through is switched to ``requires_grad=False`` for the
    duration of the block and switched back afterwards: the parameters of the
    :class:`torch.nn.Module` under the handlers of ``guide`` and of each of ``others``
    (``poutine.unwrap``; e.g. the model, whose conditionals a top-down guide may share), and the
    tensors the ``param`` sites of ``trace`` (the guide's trace) record
    (:func:`~ppl_vae.poutine.trace.param_site_tensors`): ``pyro.param`` values and the module
    parameters behind ``pyro.module`` in a function-style guide, which Pyro's examples use.
    Values of ``param`` statements are also detached by an effect handler. Yields the guide to
    call (wrapped by that handler).
    """
    tensors: dict[int, torch.Tensor] = {}
    for fn in (guide, *others):
        root = poutine.unwrap(fn)
        if isinstance(root, nn.Module):
            tensors.update((id(p), p) for p in root.parameters())
    if trace is not None:
        for t in param_site_tensors(trace):
            tensors.setdefault(id(t), t)
    frozen = [t for t in tensors.values() if torch.is_tensor(t) and t.is_leaf and t.requires_grad]
    try:
        for t in frozen:
            t.requires_grad_(False)
        with warnings.catch_warnings():
            # pyro.module (global param store mode) notes that frozen tensors are not stored
            warnings.filterwarnings("ignore", message=".*not registered in the param store")
            yield _DetachParams()(guide)
    finally:
        for t in frozen:
            t.requires_grad_(True)


def is_reparameterized_latent(site) -> bool:
    """True for a latent guide sample site drawn with ``rsample``."""
    return is_latent(site) and bool(getattr(site["fn"], "has_rsample", False))


def rescore_with_detached_parameters(guide, guide_trace, args, kwargs, model=None) -> None:
    """In place: give every reparameterized latent site of a scored guide trace the log-density
    log q_{stop_grad(phi)}(z | ...) of its (still differentiable) value z.

    The guide is re-run under :func:`poutine.replay` on the trace (same values, including any
    upstream latents that a site's distribution depends on) with its parameters phi detached
    (:func:`detached_parameters`), and the ``model``'s too, since a guide may share model
    components (the conditionals p(z_l | z_{l+1}) of a top-down guide): every parameter of q is
    held fixed, as the path derivative requires. Numerically nothing changes; only the direct
    dependence of log q on phi is removed, leaving the path derivative through the values
    (Roeder et al. 2017). The site's ``score_parts`` become ``(log_prob, 0, log_prob)``: a fully
    reparameterized entropy term. Costs one more forward pass of the guide.

    The guide's parameters are found as :func:`detached_parameters` finds them: the module it
    is, ``pyro.module`` and ``pyro.param`` statements in its trace. A tensor reached in no such
    way (a module captured in a closure and never declared) keeps the ordinary reparameterized
    gradient.
    """
    names = [name for name, site in guide_trace.nodes.items() if is_reparameterized_latent(site)]
    if not names:
        return
    others = () if model is None else (model,)
    with detached_parameters(guide, *others, trace=guide_trace) as frozen_guide:
        replayed = poutine.trace(poutine.replay(frozen_guide, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    for name in names:
        site = guide_trace.nodes[name]
        unscaled = replayed.nodes[name]["fn"].log_prob(site["value"])
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
        if is_observed(site):
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
    shared plates (the data plate and, if vectorized, the particle plate) are kept. The weights
    are the engine's (:func:`ppl_vae.infer.importance.log_weights`). Returns ``(log_p, log_q)``
    so that callers can detach either.
    """
    sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
    log_p, log_q = log_weights(model_trace, guide_trace, lambda t: torch_sum(t, sum_dims))
    return log_p / scale, log_q / scale
