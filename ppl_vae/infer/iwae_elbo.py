"""The importance-weighted bound (Burda, Grosse & Salakhutdinov 2016) with minibatch scaling.

With K particles z_k ~ q_phi(z|x) and w_k = p_theta(x, z_k) / q_phi(z_k|x),

    L_K(x) = E[ log (1/K) sum_k w_k ]  <=  log p(x),   L_1 = ELBO,   L_K increases with K,

and its reparameterized gradient is sum_k w~_k grad log w_k with self-normalized weights
w~_k = w_k / sum_j w_j (the surrogate sum_k stop_grad(w~_k) log w_k).

:class:`IWAE_ELBO` is :class:`pyro.infer.RenyiELBO` at alpha = 0 with one correction: under a
subsampled data plate Pyro multiplies every log-density by N / batch size *before* the
log-mean-exp, i.e. it computes log (1/K) sum_k w_k^(N/B): a bound with weights sharpened to
(nearly) the single largest one, which is neither the IWAE bound nor its gradient. Here the
log-weights are formed per data point from the log-densities divided by the observed sites' scale
N / B, and the bound is multiplied by N / B afterwards (an unbiased minibatch estimate of
sum_n L_K(x_n)). Latent sites with a different scale (a KL-annealing factor beta) keep the ratio
as a weight. Without subsampling it agrees with RenyiELBO(alpha=0) exactly.

Every latent site must be reparameterizable: RenyiELBO's score-function handling at alpha = 0
leaves the guide without a gradient, so a discrete latent raises here instead.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import RenyiELBO
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan

from ppl_vae.infer.util import data_scale, is_reparameterized_latent, particle_log_weights

__all__ = ["IWAE_ELBO"]


class IWAE_ELBO(RenyiELBO):
    """-L_K as the loss, K = ``num_particles``; reparameterized gradient."""

    can_infer_discrete = False  # guide sites must be reparameterizable (checked per trace)

    def __init__(
        self,
        num_particles=2,
        max_plate_nesting=float("inf"),
        vectorize_particles=False,
        strict_enumeration_warning=True,
    ):
        super().__init__(
            alpha=0.0,
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            strict_enumeration_warning=strict_enumeration_warning,
        )

    def _check_reparameterized(self, guide_trace):
        for name, site in guide_trace.nodes.items():
            if (
                site["type"] == "sample"
                and not site["is_observed"]
                and not site_is_subsample(site)
                and not is_reparameterized_latent(site)
            ):
                raise NotImplementedError(
                    f"{type(self).__name__}: guide site {name!r} is not reparameterizable; "
                    "importance-weighted bounds here need reparameterized latents (use rws)"
                )

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        self._check_reparameterized(guide_trace)
        return model_trace, guide_trace

    def _log_weights(self, model, guide, args, kwargs):
        """``(log_w, scale, latents, vectorized)``: log-weights of shape (K, ...), the data scale,
        and the latent values with their batch shapes (one list, or one list per particle)."""
        log_ws, latents, scale = [], [], 1.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            scale = data_scale(model_trace)
            log_p, log_q = particle_log_weights(model_trace, guide_trace, scale)
            log_ws.append(log_p - log_q)
            latents.append(
                [
                    (site["value"], site["log_prob"].shape)
                    for site in guide_trace.nodes.values()
                    if is_reparameterized_latent(site)
                ]
            )
        if self.vectorize_particles and self.num_particles > 1:
            return log_ws[0], scale, latents[0], True
        return torch.stack(log_ws), scale, latents, False

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs):
        """-L_K estimated with K = num_particles (a float)."""
        log_w, scale, _, _ = self._log_weights(model, guide, args, kwargs)
        bound = scale * (torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()
        loss = -bound.item()
        warn_if_nan(loss, "loss")
        return loss

    def _before_backward(self, weights, latents, vectorized) -> None:
        """Hook for subclasses, called with the normalized weights before ``backward``."""

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """-L_K (a float); accumulates the gradient estimate into ``.grad``."""
        log_w, scale, latents, vectorized = self._log_weights(model, guide, args, kwargs)
        log_norm = torch.logsumexp(log_w, 0)
        bound = scale * (log_norm - math.log(self.num_particles)).sum()
        weights = (log_w - log_norm).exp().detach()
        self._before_backward(weights, latents, vectorized)
        surrogate = scale * (weights * log_w).sum()
        if surrogate.requires_grad:
            (-surrogate).backward(retain_graph=self.retain_graph)
        loss = -bound.item()
        warn_if_nan(loss, "loss")
        return loss
