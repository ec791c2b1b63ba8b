"""VIMCO: the multi-sample bound with leave-one-out learning signals (Mnih & Rezende 2016)."""

from __future__ import annotations

import math

import torch

from ppl_vae.infer.multi_sample_elbo import MultiSampleELBO, Particles

__all__ = ["VIMCO"]


class VIMCO(MultiSampleELBO):
    r"""Variational inference for Monte Carlo objectives [1]: an unbiased estimator of the
    gradient of the importance-weighted bound :math:`\mathcal{L}_K` [2] for latents that are not
    reparameterizable (discrete), with per-sample leave-one-out baselines.

    With :math:`z_{1:K} \sim q_\phi(z|x)` i.i.d., :math:`\log w_k = \log p_\theta(x, z_k) -
    \log q_\phi(z_k|x)` and normalized weights :math:`\tilde w_k = w_k / \sum_j w_j`,

    .. math::

        \hat{\mathcal{L}}(z_{1:K}) = \log \frac{1}{K} \sum_{k=1}^K w_k, \qquad
        \hat{\mathcal{L}}_{-k} = \log \frac{1}{K} \Big( \sum_{j \ne k} w_j + \hat w_{-k} \Big),
        \quad \log \hat w_{-k} = \frac{1}{K-1} \sum_{j \ne k} \log w_j,

        \nabla \mathcal{L}_K \approx \sum_{k=1}^K \big( \hat{\mathcal{L}} - \hat{\mathcal{L}}_{-k}
        \big) \nabla_\phi \log q_\phi(z_k|x) + \sum_{k=1}^K \tilde w_k \nabla \log w_k,

    eq. (9) of [1]: sample k's learning signal is the bound minus the bound with :math:`w_k`
    replaced by the geometric mean of the others, which does not depend on :math:`z_k`, so the
    estimator stays unbiased. The score term uses the log-density of the guide's
    non-reparameterized sites only (each whole particle's signal, for any dependency between
    sites); reparameterized continuous sites keep their pathwise gradient in the second sum.
    Weights are formed per data point (the plates shared by every site) and the bound is scaled
    by the subsampling scale N / B outside the log-mean-exp. ``loss`` is :math:`-\hat{\mathcal
    L}` summed over the minibatch.

    :param int num_particles: K >= 2.
    :param bool vectorize_particles: draw the K particles in one vectorized trace.
    :param max_plate_nesting: as in :class:`~pyro.infer.elbo.ELBO` (found by Pyro by default).

    **References**

    [1] A. Mnih, D. J. Rezende, "Variational inference for Monte Carlo objectives", ICML 2016.

    [2] Y. Burda, R. Grosse, R. Salakhutdinov, "Importance weighted autoencoders", ICLR 2016.

    Example::

        import torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        x = torch.rand(8, 20).bernoulli()
        from ppl_vae.infer.vimco import VIMCO
        loss = VIMCO(num_particles=5).loss_and_grads(model, guide, x)
    """

    min_particles = 2

    def _surrogate(self, particles: Particles):
        log_w = particles.log_w
        k = log_w.shape[0]
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        with torch.no_grad():
            lw = log_w.detach()
            # log_w with entry k replaced by the mean of the others, for each k: (K, K, ...)
            loo_mean = (lw.sum(0, keepdim=True) - lw) / (k - 1)
            eye = torch.eye(k, dtype=torch.bool).reshape((k, k) + (1,) * (lw.dim() - 1))
            replaced = torch.where(eye, loo_mean.unsqueeze(1), lw.unsqueeze(0))
            bound_loo = torch.logsumexp(replaced, 1) - math.log(k)
            signal = bound.detach() - bound_loo
            weights = (lw - torch.logsumexp(lw, 0, keepdim=True)).exp()
        surrogate = (signal * particles.score).sum() + (weights * log_w).sum()
        return particles.scale * bound.sum(), particles.scale * surrogate
