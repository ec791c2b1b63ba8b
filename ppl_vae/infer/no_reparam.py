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

from ppl_vae.poutine.trace import is_latent

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
    r"""Effect handler: every latent sample site samples without a gradient path.

    Each latent site's distribution is wrapped in :class:`NonReparameterized`
    (``has_rsample = False``), so that Pyro's ELBOs estimate its gradient with the score
    function (likelihood ratio, REINFORCE) [1, 2] instead of the pathwise (reparameterized)
    gradient [3] on the *same* continuous latent:

    .. math::

        \nabla_\phi\, \mathbb{E}_{q_\phi(z \mid x)}\big[f(z)\big]
        = \mathbb{E}_{q_\phi(z \mid x)}\big[f(z)\, \nabla_\phi \log q_\phi(z \mid x)\big]
        \quad \text{instead of} \quad
        \mathbb{E}_{p(\epsilon)}\big[\nabla_\phi f(g_\phi(\epsilon, x))\big],

    with :math:`f(z) = \log p_\theta(x, z) - \log q_\phi(z \mid x)` (whose own
    :math:`\phi`-dependence adds :math:`\mathbb{E}_q[\nabla_\phi \log q_\phi] = 0`). Observed
    sites, subsample sites, sites marked for enumeration and distributions that are already not
    reparameterizable are left alone. Being an effect handler it works for any guide.

    :param sites: if given, the names of the only sites to treat. Default: all latent sites.
    :type sites: iterable of str or None

    Example::

        import torch
        from ppl_vae.guides import DiagonalNormalGuide
        from ppl_vae.infer import NoReparamMessenger
        from pyro import poutine

        guide = DiagonalNormalGuide(x_dim=20, latent_dim=2, hidden=(16,))
        with NoReparamMessenger():
            trace = poutine.trace(guide).get_trace(torch.rand(8, 20))
        assert not trace.nodes["z"]["fn"].has_rsample  # Pyro now uses the score function
        assert not trace.nodes["z"]["value"].requires_grad

    **References**

    [1] R. J. Williams, *Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning*, Machine Learning 8, 1992.

    [2] R. Ranganath, S. Gerrish, D. M. Blei, *Black Box Variational Inference*, AISTATS 2014.

    [3] D. P. Kingma, M. Welling, *Auto-Encoding Variational Bayes*, ICLR 2014.
    """

    def __init__(self, sites=None):
        super().__init__()
        self.sites = None if sites is None else frozenset(sites)

    def _pyro_sample(self, msg):
        fn = msg["fn"]
        if (
            not is_latent(msg)
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
