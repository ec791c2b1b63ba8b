"""Shared machinery of the discrete-latent gradient estimators: K particles, per-data-point parts.

:class:`MultiSampleELBO` draws K particles (vectorized in a particle plate, or in a Python loop),
optionally through an effect handler put around the guide *outside* the particle plate (so that
the handler sees every site's distribution with its full batch shape), replays the model, and
splits every particle's log-weight into per-data-point parts:

* ``log_p``, ``log_q``: log p(x, z) and log q(z|x), each site's scaled log-density divided by the
  data scale (N / batch size under a subsampled data plate) and summed over the plates that are
  not shared by all sites, *keeping* the summed dims with size 1, so that the parts broadcast
  against any site's batch shape (the estimators scatter per-data-point learning signals onto
  sites);
* ``score``: sum of the unscaled log q of the guide's non-reparameterized latent sites (the
  score-function term's log-density);

and the subclasses build their surrogate from them. The objective is the minibatch estimate
``scale * sum_n objective(x_n)``, scaled outside any log-mean-exp as in
:class:`~ppl_vae.infer.iwae_elbo.IWAE_ELBO`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pyro
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import get_dependent_plate_dims
from pyro.util import warn_if_nan

from ppl_vae.infer.util import data_scale
from ppl_vae.poutine.trace import is_latent

__all__ = ["MultiSampleELBO", "Particles", "bernoulli_logits", "sum_plates"]


def sum_plates(t: torch.Tensor, dims) -> torch.Tensor:
    """Sum ``t`` over the (negative) ``dims`` it has, keeping them with size 1."""
    dims = [d for d in dims if -t.dim() <= d]
    return t.sum(dims, keepdim=True) if dims else t


def bernoulli_logits(fn):
    """The logits of a (possibly ``to_event``-wrapped, masked or expanded) Bernoulli distribution,
    broadcast to ``fn``'s batch + event shape; None when ``fn`` is not a Bernoulli."""
    shape = fn.batch_shape + fn.event_shape
    base = fn
    while not isinstance(base, torch.distributions.Bernoulli):
        base = getattr(base, "base_dist", None)
        if base is None:
            return None
    return base.logits.expand(shape)


@dataclass
class Particles:
    """Per-particle parts, particle dim first: ``(K, ...)`` tensors broadcastable to the sites'
    batch shapes (after the particle dim). ``traces``: ``[(model_trace, guide_trace)]``, one
    entry (vectorized) or one per particle; ``scale``: the data scale."""

    log_p: torch.Tensor
    log_q: torch.Tensor
    score: torch.Tensor
    scale: float
    traces: list
    vectorized: bool

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_p - self.log_q


class MultiSampleELBO(ELBO):
    """Base class: K particles per data point, per-data-point log-weights, own surrogate.

    Subclasses implement ``_surrogate(particles) -> (objective, surrogate)`` (both summed
    tensors, ``objective`` without gradient use, ``surrogate`` the quantity whose gradient is the
    estimate) and may set ``_guide_handler()`` (a fresh effect handler per trace, put around the
    guide outside the particle plate).
    """

    can_infer_discrete = True
    biased = False
    min_particles = 1
    #: Pyro's validation (site shapes, distribution arguments and supports), where it is
    #: enabled, runs on the first call and on every ``validate_every``-th call; the calls in
    #: between trace with it off (it costs about 15% of a step on the linear SBN, and the
    #: structure it checks is the same from call to call). 1: every call.
    validate_every = 100

    def __init__(self, num_particles=2, vectorize_particles=True,
                 max_plate_nesting=float("inf"), strict_enumeration_warning=True):
        if num_particles < self.min_particles:
            raise ValueError(f"{type(self).__name__} needs num_particles >= {self.min_particles}, "
                             f"got {num_particles}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=vectorize_particles and num_particles > 1,
                         strict_enumeration_warning=strict_enumeration_warning)

    # --- traces -----------------------------------------------------------------------------

    def _guide_handler(self):
        return None

    def _trace_pair(self, model, guide, args, kwargs, handler=None, max_plate_nesting=None):
        if handler is not None:
            guide = handler(guide)
        nesting = self.max_plate_nesting if max_plate_nesting is None else max_plate_nesting
        return get_importance_trace("flat", nesting, model, guide, args, kwargs)

    def _validation(self):
        """The validation context of one call (see :attr:`validate_every`)."""
        self._calls = getattr(self, "_calls", 0) + 1
        if self.validate_every <= 1 or self._calls % self.validate_every == 1:
            return contextlib.nullcontext()
        return pyro.validation_enabled(False)

    def _stacking_plate(self, size):
        """``(wrap, nesting)``: ``wrap(fn)`` runs ``fn`` in a plate of ``size`` copies at the
        leftmost batch dim (the vectorized particle plate's dim when particles are vectorized,
        one more dim otherwise), and the ``max_plate_nesting`` its traces need."""
        nesting = self.max_plate_nesting + (0 if self.vectorize_particles else 1)

        def wrap(fn):
            def stacked(*args, **kwargs):
                with pyro.plate("num_particles_vectorized", size, dim=-nesting):
                    return fn(*args, **kwargs)
            return stacked

        return wrap, nesting

    def _get_trace(self, model, guide, args, kwargs):
        return self._trace_pair(model, guide, args, kwargs, self._guide_handler())

    def _particles(self, model, guide, args, kwargs) -> Particles:
        traces = list(self._get_traces(model, guide, args, kwargs))
        parts = [self._parts(m, g) for m, g in traces]
        scale = data_scale(traces[0][0])
        vectorized = bool(self.vectorize_particles and self.num_particles > 1)
        if vectorized:
            # every site is inside the particle plate (dim -max_plate_nesting), so the kept-dims
            # parts have exactly max_plate_nesting dims and the particle dim is dim 0
            log_p, log_q, score = torch.broadcast_tensors(*parts[0])
            assert log_p.dim() == self.max_plate_nesting, (log_p.shape, self.max_plate_nesting)
        else:
            shape = torch.broadcast_shapes(*(t.shape for p in parts for t in p))
            log_p, log_q, score = (torch.stack([p[i].expand(shape) for p in parts])
                                   for i in range(3))
        return Particles(log_p / scale, log_q / scale, score, scale, traces, vectorized)

    @staticmethod
    def _parts(model_trace, guide_trace):
        """(log_p, log_q, score) of one trace, plates not shared by all sites summed (kept)."""
        sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
        zero = torch.zeros(())
        log_p, log_q, score = zero, zero, zero
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                log_p = log_p + sum_plates(site["log_prob"], sum_dims)
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            log_q = log_q + sum_plates(site["log_prob"], sum_dims)
            if is_latent(site) and not site["fn"].has_rsample:
                unscaled = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])
                score = score + sum_plates(unscaled, sum_dims)
        return log_p, log_q, score

    # --- ELBO interface ---------------------------------------------------------------------

    def _surrogate(self, particles: Particles):
        raise NotImplementedError

    def loss(self, model, guide, *args, **kwargs):
        """-objective estimate (a float)."""
        with torch.no_grad(), self._validation():
            objective, _ = self._surrogate(self._particles(model, guide, args, kwargs))
        loss = -objective.item()
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """-objective estimate (a float); accumulates the gradient estimate into ``.grad``."""
        with self._validation():
            objective, surrogate = self._surrogate(self._particles(model, guide, args, kwargs))
        if torch.is_tensor(surrogate) and surrogate.requires_grad:
            (-surrogate).backward(retain_graph=self.retain_graph)
        loss = -objective.detach().item()
        warn_if_nan(loss, "loss")
        return loss

    # trace helpers for subclasses --------------------------------------------------------

    @staticmethod
    def at_site(t: torch.Tensor, site) -> torch.Tensor:
        """A per-data-point tensor ``t`` with the site's event dims appended (to broadcast
        against ``site['value']``)."""
        return t.reshape(t.shape + (1,) * len(site["fn"].event_shape))
