"""DisARM: antithetic sampling for Bernoulli latents, integrating out the augmentation
(Dong, Mnih & Tucker 2020)."""

from __future__ import annotations

import torch

from ppl_vae.infer.arm import ARM

__all__ = ["DisARM"]


class DisARM(ARM):
    r"""The DisARM gradient estimator [1] of the ELBO for the Bernoulli latent sites of any
    guide: ARM's [2] antithetic pair with the uniform noise analytically integrated out given
    the pair, which never increases the variance (Rao-Blackwellization, [1] sec. 3).

    With logits :math:`\alpha`, :math:`u \sim U(0, 1)^J`, :math:`b = \mathbf{1}[u <
    \sigma(\alpha)]`, :math:`\tilde b = \mathbf{1}[1 - u < \sigma(\alpha)]` and
    :math:`f(b) = \log p_\theta(x, b) - \log q_\phi(b|x)`,

    .. math::

        \nabla_{\alpha_j} \mathbb{E}_q[f(b)] \approx \tfrac{1}{2} \big( f(b) - f(\tilde b) \big)
        (-1)^{\tilde b_j} \, \mathbf{1}[b_j \ne \tilde b_j] \, \sigma(|\alpha_j|)

    (eq. (6) of [1]): coordinate j gets a signal only where the pair disagrees there. Everything
    else — reading the logits from the guide trace, drawing the pair with
    :class:`~ppl_vae.infer.arm.AntitheticBernoulliMessenger`, reparameterized sites, K pairs
    (``disarm-K``), minibatch scaling, the restrictions — is as in
    :class:`~ppl_vae.infer.arm.ARM`.

    :param int num_particles: K, the number of antithetic pairs.
    :param bool vectorize_particles: draw the K pairs in one vectorized trace each side.
    :param max_plate_nesting: as in :class:`~pyro.infer.elbo.ELBO`.

    **References**

    [1] Z. Dong, A. Mnih, G. Tucker, "DisARM: An antithetic gradient estimator for binary
    latent variables", NeurIPS 2020.

    [2] M. Yin, M. Zhou, "ARM: Augment-REINFORCE-merge gradient for stochastic binary
    networks", ICLR 2019.

    Example::

        import torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        x = torch.rand(8, 20).bernoulli()
        from ppl_vae.infer.disarm import DisARM
        loss = DisARM(num_particles=1).loss_and_grads(model, guide, x)   # one pair: 2 samples
    """

    def _signal(self, f_a, f_b, u, logits, b_a, b_b):
        sign = 1.0 - 2.0 * b_b
        return 0.5 * (f_a - f_b) * sign * (b_a != b_b).to(logits.dtype) * torch.sigmoid(
            logits.abs())
