"""Switch reparameterization off with an effect handler: the score-function (REINFORCE) estimator.

For a latent site z ~ q_phi(z|x) the ELBO gradient can be estimated in two ways:

* pathwise (reparameterized; Kingma & Welling 2014, Rezende et al. 2014): write
  z = g_phi(eps, x) with eps ~ p(eps) and differentiate through g, giving
  E_eps[ grad_phi (log p(x, g_phi(eps, x)) - log q_phi(g_phi(eps, x) | x)) ];
* score function / likelihood ratio (Williams 1992; Glynn 1990; Ranganath et al. 2014, "Black Box
  Variational Inference"): using grad_phi q = q grad_phi log q and E_q[grad_phi log q] = 0,
  grad_phi ELBO = E_q[ (log p(x, z) - log q_phi(z|x)) grad_phi log q_phi(z|x) ].

Pyro's ELBOs choose between the two per sample site from ``fn.has_rsample``. The
:class:`NoReparamMessenger` below wraps every latent sample site's distribution in
:class:`NonReparameterized`, which reports ``has_rsample = False`` and draws samples with no
gradient path (Pyro's public ``Distribution.has_rsample_(False)`` cannot be used for this in
pyro-ppl 1.9: it raises on ``Independent``, whose ``has_rsample`` is a read-only property, and
setting it on the base distribution instead breaks vectorized particles, because
``BroadcastMessenger`` then tries to copy the flag onto the expanded ``Independent``), so that
:class:`~pyro.infer.TraceGraph_ELBO` uses the score function on the *same*
continuous latent. Being an effect handler, it works for any guide, not only ours::

    with NoReparamMessenger():
        guide(x)          # every latent site now samples with .sample(), not .rsample()
"""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

__all__ = ["NonReparameterized", "NoReparamMessenger", "no_reparam"]


class NonReparameterized(TorchDistribution):
    """``base_dist`` with reparameterized sampling switched off.

    Same support, shapes, ``log_prob``, mean and variance as ``base_dist``; ``has_rsample`` is
    False, ``sample`` never records a gradient path and ``rsample`` raises. Pyro's
    :meth:`~pyro.distributions.torch_distribution.TorchDistributionMixin.score_parts` then returns
    ``(log_prob, score_function=log_prob, entropy_term=0)``: the site contributes through the score
    function only.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, base_dist, validate_args=None):
        self.base_dist = base_dist
        super().__init__(base_dist.batch_shape, base_dist.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base_dist.support

    @property
    def has_enumerate_support(self):
        return self.base_dist.has_enumerate_support

    def expand(self, batch_shape, _instance=None):
        return NonReparameterized(self.base_dist.expand(torch.Size(batch_shape)))

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()):
        return self.base_dist.sample(sample_shape)

    def rsample(self, sample_shape=torch.Size()):
        raise NotImplementedError("NonReparameterized: reparameterized sampling is switched off")

    def log_prob(self, value):
        return self.base_dist.log_prob(value)

    def enumerate_support(self, expand=True):
        return self.base_dist.enumerate_support(expand=expand)

    @property
    def mean(self):
        return self.base_dist.mean

    @property
    def variance(self):
        return self.base_dist.variance

    def entropy(self):
        return self.base_dist.entropy()

    def __repr__(self):
        return f"NonReparameterized({self.base_dist!r})"


class NoReparamMessenger(Messenger):
    """Effect handler: every latent (non-observed) sample site samples without a gradient path.

    Observed sites, subsample sites, sites marked for enumeration and distributions that are
    already not reparameterizable are left alone. ``sites`` (optional) restricts the handler to
    the named sites.
    """

    def __init__(self, sites=None):
        super().__init__()
        self.sites = None if sites is None else frozenset(sites)

    def _pyro_sample(self, msg):
        fn = msg["fn"]
        if (
            msg["is_observed"]
            or site_is_subsample(msg)
            or msg["infer"].get("enumerate")
            or not getattr(fn, "has_rsample", False)
            or (self.sites is not None and msg["name"] not in self.sites)
        ):
            return
        msg["fn"] = NonReparameterized(fn)


def no_reparam(fn=None, sites=None):
    """``no_reparam(guide)``: the guide with reparameterization switched off (see
    :class:`NoReparamMessenger`); usable as a decorator or a context manager like any handler."""
    msg = NoReparamMessenger(sites=sites)
    return msg(fn) if fn is not None else msg
