"""The deterministic autoencoder's "generative model": an improper flat prior and a decoder.

``AutoencoderModel`` is :class:`~ppl_vae.models.VAEModel` with the prior N(0, I) replaced by the
improper flat ``dist.ImproperUniform(constraints.real, (), (J,))`` at site ``"z"``: its
``log_prob`` is 0 everywhere, so the latent site adds no density term, and it cannot be sampled
(there are no prior samples of an autoencoder). Paired with a point-mass guide
q(z|x) = Delta(f(x)) (:class:`~ppl_vae.guides.PointGuide`, whose log-density at its own value
is 0), Pyro's ``Trace_ELBO`` is

    E_q[log p(x|z) + log p(z) - log q(z|x)] = log p(x | z = f(x)) + 0 - 0,

exactly the reconstruction log-likelihood: the Bernoulli likelihood gives the binary
cross-entropy autoencoder, the Gaussian one a (learned-variance) squared-error autoencoder.
Marginal-likelihood estimators refuse this pair (:mod:`ppl_vae.marginal.checks`).
"""

from __future__ import annotations

import pyro.distributions as dist
from torch.distributions import constraints

from ppl_vae.models.vae import VAEModel

__all__ = ["AutoencoderModel"]


class AutoencoderModel(VAEModel):
    """``VAEModel`` with the density-free prior ``ImproperUniform`` over R^J (same decoder)."""

    def prior(self) -> dist.TorchDistribution:
        return dist.ImproperUniform(constraints.real, (), (self.latent_dim,))
