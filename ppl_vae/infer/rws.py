"""Reweighted wake-sleep with per-data-point importance weights (Bornschein & Bengio 2015).

With K particles z_k ~ q_phi(z|x) (drawn *without* a gradient path, so any latent type works,
discrete included), log-weights log w_k = log p_theta(x, z_k) - log q_phi(z_k|x) and
self-normalized weights w~_k:

* wake-theta: ascend the IWAE bound, grad_theta L_K ~= sum_k w~_k grad_theta log p_theta(x, z_k);
* wake-phi: descend the self-normalized estimate of the inclusive KL(p(z|x) || q_phi(z|x)),
  i.e. ascend sum_k w~_k log q_phi(z_k|x) (Le et al. 2019, "Revisiting Reweighted Wake-Sleep").

:class:`ReweightedWakeSleep` is :class:`pyro.infer.ReweightedWakeSleep` with ``insomnia = 1``
(wake-phi only) and two changes so that it fits an amortized minibatch VAE:

* the importance weights are formed *per data point* (Pyro's version forms them over the whole
  batch at once, treating it as one observation, which degenerates for realistic batch sizes),
  and under a subsampled data plate the bound is rescaled by N / batch size outside the
  log-mean-exp;
* ``loss`` and ``loss_and_grads`` return one float, -L_K, like every other ELBO (Pyro returns the
  pair (wake-theta loss, phi loss)).

The sleep-phi term (insomnia < 1) is not offered: it needs a guide that reads its observations
from an ``observations`` keyword, whereas our guides take x positionally.
"""

from __future__ import annotations

import math

import pyro.infer
import torch
from pyro.util import warn_if_nan

from ppl_vae.infer.util import data_scale, particle_log_weights

__all__ = ["ReweightedWakeSleep"]


class ReweightedWakeSleep(pyro.infer.ReweightedWakeSleep):
    r"""Reweighted wake-sleep [1] (wake-theta and wake-phi) with per-data-point weights.

    :math:`K` samples :math:`z_k \sim q_\phi(z \mid x)` per data point are drawn *without* a
    gradient path, so any latent type works, discrete included. With
    :math:`\log w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k \mid x)` and
    :math:`\tilde w_k = w_k / \sum_j w_j` (no gradient through :math:`\tilde w_k`), the two
    gradient estimates are

    .. math::

        \text{wake-}\theta: \quad
        \nabla_\theta \log \frac{1}{K} \sum_{k=1}^K w_k
        = \sum_{k=1}^K \tilde w_k \, \nabla_\theta \log p_\theta(x, z_k),
        \qquad
        \text{wake-}\phi: \quad
        \sum_{k=1}^K \tilde w_k \, \nabla_\phi \log q_\phi(z_k \mid x),

    ascending the importance-weighted bound :math:`\mathcal{L}_K` in :math:`\theta` and
    descending a self-normalized estimate of the inclusive
    :math:`\mathrm{KL}(p_\theta(z \mid x) \,\|\, q_\phi(z \mid x))` in :math:`\phi` [2]. Unlike
    :class:`pyro.infer.ReweightedWakeSleep` (of which this is the ``insomnia=1`` case), the
    weights are normalized per data point, not over the whole batch; under a subsampled data
    plate both terms are multiplied by :math:`N/B` outside the log-mean-exp; and ``loss`` /
    ``loss_and_grads`` return one float, the estimate of :math:`-\frac{N}{B} \sum_n
    \mathcal{L}_K(x_n)`. The sleep-phi term is not offered (see the module docstring).

    :param int num_particles: :math:`K`, the number of samples per data point; at least 2.
        Default 2.
    :param bool vectorize_particles: draw the :math:`K` samples in one vectorized pass.
        Default True.
    :param max_plate_nesting: bound on the number of nested :func:`pyro.plate` contexts.
        Default infinity: Pyro finds it from a first trace.
    :param bool strict_enumeration_warning: as in :class:`pyro.infer.ELBO`.

    Example::

        import pyro, torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.infer import ReweightedWakeSleep
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)  # binary latents
        elbo = ReweightedWakeSleep(num_particles=5)
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), elbo)
        loss = svi.step(torch.rand(8, 20).bernoulli(), num_data=100)  # -L_5 estimate

    **References**

    [1] J. Bornschein, Y. Bengio, *Reweighted Wake-Sleep*, ICLR 2015.

    [2] T. A. Le, A. R. Kosiorek, N. Siddharth, Y. W. Teh, F. Wood, *Revisiting Reweighted
    Wake-Sleep for Models with Stochastic Control Flow*, UAI 2019.
    """

    can_infer_discrete = True  # particles are drawn without a gradient path

    def __init__(
        self,
        num_particles=2,
        vectorize_particles=True,
        max_plate_nesting=float("inf"),
        strict_enumeration_warning=True,
    ):
        super().__init__(
            num_particles=num_particles,
            insomnia=1.0,
            model_has_params=True,
            vectorize_particles=vectorize_particles,
            max_plate_nesting=max_plate_nesting,
            strict_enumeration_warning=strict_enumeration_warning,
        )

    def _wake_losses(self, model, guide, args, kwargs):
        log_ps, log_qs, scale = [], [], 1.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            scale = data_scale(model_trace)
            log_p, log_q = particle_log_weights(model_trace, guide_trace, scale)
            log_ps.append(log_p)
            log_qs.append(log_q)
        if self.vectorize_particles and self.num_particles > 1:
            log_p, log_q = log_ps[0], log_qs[0]
        else:
            log_p, log_q = torch.stack(log_ps), torch.stack(log_qs)
        log_w = log_p - log_q.detach()
        log_norm = torch.logsumexp(log_w, 0)
        wake_theta_loss = -scale * (log_norm - math.log(self.num_particles)).sum()
        weights = (log_w - log_norm).exp().detach()
        wake_phi_loss = -scale * (weights * log_q).sum()
        return wake_theta_loss, wake_phi_loss

    def loss(self, model, guide, *args, **kwargs):
        """-L_K estimated with K = num_particles (a float)."""
        with torch.no_grad():
            wake_theta_loss, _ = self._wake_losses(model, guide, args, kwargs)
        loss = wake_theta_loss.item()
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """-L_K (a float); accumulates wake-theta and wake-phi gradients into ``.grad``."""
        wake_theta_loss, wake_phi_loss = self._wake_losses(model, guide, args, kwargs)
        total = wake_theta_loss + wake_phi_loss
        if total.requires_grad:
            total.backward()
        loss = wake_theta_loss.item()
        warn_if_nan(loss, "loss")
        return loss
