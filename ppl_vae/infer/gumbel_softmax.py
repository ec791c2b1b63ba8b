"""Concrete / Gumbel-softmax relaxations of Bernoulli latents, plain and straight-through
(Maddison, Mnih & Teh 2017; Jang, Gu & Poole 2017)."""

from __future__ import annotations

import pyro
import torch
from pyro.poutine.messenger import Messenger

from ppl_vae.infer.multi_sample_elbo import MultiSampleELBO, Particles, bernoulli_logits
from ppl_vae.poutine.trace import is_latent

__all__ = ["GumbelSoftmax", "RelaxedBernoulliMessenger"]


class RelaxedBernoulliMessenger(Messenger):
    """Effect handler: replace every latent Bernoulli draw by its binary-Concrete relaxation
    ``sigmoid((logits + L) / temperature)``, L ~ Logistic(0, 1), or (``straight_through``) by
    the exact draw ``1[logits + L > 0]`` whose gradient is the relaxation's. Any other latent
    site that is not reparameterizable raises. Put it outside any vectorized particle plate."""

    def __init__(self, temperature: float, straight_through: bool = False):
        super().__init__()
        self.temperature = float(temperature)
        self.straight_through = bool(straight_through)

    def _pyro_sample(self, msg):
        if not is_latent(msg) or msg["value"] is not None:
            return
        logits = bernoulli_logits(msg["fn"])
        if logits is None:
            if not msg["fn"].has_rsample:
                raise NotImplementedError(f"GumbelSoftmax: guide site {msg['name']!r} is neither "
                                          "Bernoulli nor reparameterizable")
            return
        eps = torch.finfo(logits.dtype).tiny
        u = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device).clamp(eps, 1 - eps)
        y = logits + (torch.log(u) - torch.log1p(-u))
        soft = torch.sigmoid(y / self.temperature)
        if self.straight_through:
            hard = (y > 0).to(logits.dtype)
            msg["value"] = hard + (soft - soft.detach())
        else:
            msg["value"] = soft


class GumbelSoftmax(MultiSampleELBO):
    r"""Reparameterized gradient of a continuous relaxation of the ELBO for the Bernoulli latent
    sites of any guide: the binary Concrete [1] / Gumbel-softmax [2] relaxation, or its
    straight-through variant [2]. **Biased** (``biased = True``): the relaxed objective is not
    the ELBO; the bias vanishes as the temperature goes to 0, where the variance grows.

    With logits :math:`\alpha`, logistic noise :math:`L = \log u - \log(1 - u)`,
    :math:`u \sim U(0, 1)`, and temperature :math:`\tau`, the relaxed sample and the exact one
    are

    .. math::

        \tilde z = \sigma\big( (\alpha + L) / \tau \big), \qquad b = \mathbf{1}[\alpha + L > 0]
        \sim \mathrm{Bernoulli}(\sigma(\alpha)).

    The plain estimator is :math:`\nabla \frac1K \sum_k f(\tilde z_k)` with every Bernoulli
    log-density in :math:`f = \log p_\theta(x, z) - \log q_\phi(z|x)` evaluated at the relaxed
    value by its continuous extension :math:`z \log \sigma(\alpha) + (1 - z) \log \sigma(-\alpha)`
    (the decoder sees :math:`\tilde z`); the straight-through estimator evaluates :math:`f` at
    the exact draw :math:`b` (so ``loss`` is an exact ELBO estimate) and back-propagates through
    :math:`b + \tilde z - \mathrm{stop\_grad}(\tilde z)`. The samples are drawn by
    :class:`RelaxedBernoulliMessenger` on the guide, reading the logits from each site's ``fn``;
    reparameterized continuous sites keep their pathwise gradient; any other site that is not
    reparameterizable raises. Per data point, scaled by the subsampling scale. Validation of
    the Bernoulli support is switched off while tracing.

    :param int num_particles: K samples per data point (averaged).
    :param float temperature: :math:`\tau > 0`.
    :param bool straight_through: forward pass at the exact draw.
    :param bool vectorize_particles: draw the K samples in one vectorized trace.
    :param max_plate_nesting: as in :class:`~pyro.infer.elbo.ELBO`.
    :param bool strict_enumeration_warning: as in :class:`~pyro.infer.elbo.ELBO`.

    **References**

    [1] C. J. Maddison, A. Mnih, Y. W. Teh, "The Concrete distribution: a continuous relaxation
    of discrete random variables", ICLR 2017.

    [2] E. Jang, S. Gu, B. Poole, "Categorical reparameterization with Gumbel-softmax",
    ICLR 2017.

    Example::

        import torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        x = torch.rand(8, 20).bernoulli()
        from ppl_vae.infer.gumbel_softmax import GumbelSoftmax
        elbo = GumbelSoftmax(num_particles=2, temperature=1.0, straight_through=True)
        loss = elbo.loss_and_grads(model, guide, x)
    """

    biased = True

    def __init__(self, num_particles=1, temperature=0.5, straight_through=False,
                 vectorize_particles=True, max_plate_nesting=float("inf"),
                 strict_enumeration_warning=True):
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.straight_through = bool(straight_through)
        super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles,
                         max_plate_nesting=max_plate_nesting,
                         strict_enumeration_warning=strict_enumeration_warning)

    def _guide_handler(self):
        return RelaxedBernoulliMessenger(self.temperature, self.straight_through)

    def _trace_pair(self, model, guide, args, kwargs, handler=None):
        with pyro.validation_enabled(False):
            return super()._trace_pair(model, guide, args, kwargs, handler)

    def _surrogate(self, particles: Particles):
        objective = particles.log_w.mean(0).sum()
        return particles.scale * objective, particles.scale * objective
