"""REINFORCE with the leave-one-out baseline (Kool, van Hoof & Welling 2019)."""

from __future__ import annotations

from ppl_vae.infer.multi_sample_elbo import MultiSampleELBO, Particles

__all__ = ["ReinforceLOO"]


class ReinforceLOO(MultiSampleELBO):
    r"""The score-function estimator of the ELBO gradient with K samples, each sample's baseline
    the mean of the other K - 1 ("REINFORCE leave-one-out", [1]; used as the strongest
    unbiased REINFORCE variant by [2]).

    With :math:`z_{1:K} \sim q_\phi(z|x)` i.i.d. and :math:`f_k = \log p_\theta(x, z_k) -
    \log q_\phi(z_k|x)`,

    .. math::

        \nabla \mathrm{ELBO} \approx \frac{1}{K} \sum_{k=1}^K \Big[ \Big( f_k - \frac{1}{K-1}
        \sum_{j \ne k} f_j \Big) \nabla_\phi \log q_\phi(z_k|x) + \nabla f_k \Big]
        = \frac{1}{K-1} \sum_{k=1}^K (f_k - \bar f) \nabla_\phi \log q_\phi(z_k|x)
        + \frac{1}{K} \sum_k \nabla f_k,

    unbiased because sample k's baseline is independent of :math:`z_k`. The score term uses the
    guide's non-reparameterized sites; reparameterized continuous sites keep the pathwise
    gradient inside :math:`\nabla f_k`. Per data point (the plates shared by every site), scaled
    by the subsampling scale. ``loss`` is minus the K-sample average ELBO estimate.

    :param int num_particles: K >= 2.
    :param bool vectorize_particles: draw the K particles in one vectorized trace.
    :param max_plate_nesting: as in :class:`~pyro.infer.elbo.ELBO`.

    **References**

    [1] W. Kool, H. van Hoof, M. Welling, "Buy 4 REINFORCE samples, get a baseline for free!",
    ICLR 2019 Deep RL Meets Structured Prediction workshop.

    [2] Z. Dong, A. Mnih, G. Tucker, "DisARM: An antithetic gradient estimator for binary
    latent variables", NeurIPS 2020.

    Example::

        import torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        x = torch.rand(8, 20).bernoulli()
        from ppl_vae.infer.reinforce_loo import ReinforceLOO
        loss = ReinforceLOO(num_particles=2).loss_and_grads(model, guide, x)
    """

    min_particles = 2

    def _surrogate(self, particles: Particles):
        f = particles.log_w
        k = f.shape[0]
        fd = f.detach()
        signal = fd - (fd.sum(0, keepdim=True) - fd) / (k - 1)
        elbo = f.mean(0)
        surrogate = (signal * particles.score).sum() / k + elbo.sum()
        return particles.scale * elbo.sum(), particles.scale * surrogate
