"""REBAR: REINFORCE with the Concrete relaxation as a control variate (Tucker et al. 2017)."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace

from ppl_vae.infer.multi_sample_elbo import MultiSampleELBO, bernoulli_logits
from ppl_vae.infer.util import data_scale, detached_parameters
from ppl_vae.poutine.capture import is_capturing
from ppl_vae.poutine.trace import is_latent

__all__ = ["REBAR", "RebarMessenger"]


def _logit(p):
    eps = torch.finfo(p.dtype).eps
    p = p.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


class RebarMessenger(Messenger):
    """Effect handler for REBAR's three evaluations. With ``values=None`` it draws every latent
    Bernoulli site as ``b = H(z)``, ``z = logits + Logistic noise``, and records ``z`` and a
    draw ``z~ ~ p(z | b)`` (both differentiable in the logits) in ``self.z`` /
    ``self.z_tilde``; given ``values`` (a dict of tensors) it sets each Bernoulli site to its
    entry instead. Put it outside any vectorized particle plate."""

    def __init__(self, values=None):
        super().__init__()
        self.values = values
        self.z, self.z_tilde, self.logits = {}, {}, {}

    def _pyro_sample(self, msg):
        if not is_latent(msg) or msg["value"] is not None:
            return
        logits = bernoulli_logits(msg["fn"])
        if logits is None:
            return
        name = msg["name"]
        if self.values is not None:
            msg["value"] = self.values[name]
            return
        u = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device)
        v = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device)
        z = logits + _logit(u)
        b = (z > 0).to(logits.dtype)
        theta = torch.sigmoid(logits)
        # z~ | b: the same CDF transform restricted to the half-line b selects
        u_cond = b * (1 - theta + v * theta) + (1 - b) * (v * (1 - theta))
        self.z[name], self.z_tilde[name] = z, logits + _logit(u_cond)
        self.logits[name] = logits
        msg["value"] = b


class REBAR(MultiSampleELBO):
    r"""The REBAR gradient estimator [1] of the ELBO for the Bernoulli latent sites of any guide,
    with fixed control-variate scale :math:`\eta` and temperature :math:`\lambda` (unbiased for
    any fixed values; [1] also tunes both by minimizing the variance, and RELAX [2] learns a
    control variate: :class:`~ppl_vae.infer.relax.RELAX` does both, ``relax`` with
    ``control_network=False`` being REBAR with online tuning).

    With logits :math:`\alpha`, :math:`z = \alpha + \log\frac{u}{1-u}`, :math:`b = H(z) \sim
    \mathrm{Bernoulli}(\sigma(\alpha))`, :math:`\tilde z \sim p(z | b)` (reparameterized given
    :math:`b`), the relaxation :math:`\sigma_\lambda(z) = \sigma(z / \lambda)`, the control
    variate :math:`c(z) = \eta f(\sigma_\lambda(z))` and :math:`f = \log p_\theta(x, \cdot) -
    \log q_\phi(\cdot|x)` (Bernoulli log-densities extended to the unit interval linearly in
    the value),

    .. math::

        \nabla_\alpha \mathbb{E}[f(b)] \approx \big( f(b) - c(\tilde z) \big) \nabla_\alpha
        \log q(b) + \nabla_\alpha c(z) - \nabla_\alpha c(\tilde z)

    (eq. (6) of [1]). The control-variate terms are differentiated only through :math:`z` and
    :math:`\tilde z` (the model and guide parameters are held fixed there, so they add no noise
    to the other gradients); :math:`\theta` and reparameterized continuous sites get
    :math:`\nabla f(b)`, and the direct :math:`\nabla_\phi \log q(b)` term (mean zero) is left
    out, as in :class:`~ppl_vae.infer.arm.ARM`. Three model evaluations per sample, drawn by
    :class:`RebarMessenger`, in two traces: at :math:`b`, and at the two relaxed points stacked
    in one plate of copies; latents sampled before the first Bernoulli site are shared by the
    three (replayed); the restrictions are ARM's (a guide without Bernoulli sites gets the
    reparameterized gradient). K samples are averaged.

    :param int num_particles: K samples per data point.
    :param float temperature: :math:`\lambda > 0` (0.5).
    :param float eta: :math:`\eta` (1.0).
    :param bool vectorize_particles: draw the K samples in one vectorized trace.
    :param max_plate_nesting: as in :class:`~pyro.infer.elbo.ELBO`.
    :param bool strict_enumeration_warning: as in :class:`~pyro.infer.elbo.ELBO`.

    **References**

    [1] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein, "REBAR: Low-variance,
    unbiased gradient estimates for discrete latent variable models", NeurIPS 2017.

    [2] W. Grathwohl, D. Choi, Y. Wu, G. Roeder, D. Duvenaud, "Backpropagation through the
    void: optimizing control variates for black-box gradient estimation" (RELAX), ICLR 2018.

    Example::

        import torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        x = torch.rand(8, 20).bernoulli()
        from ppl_vae.infer.rebar import REBAR
        loss = REBAR(num_particles=1, temperature=0.5).loss_and_grads(model, guide, x)
    """

    def __init__(self, num_particles=1, temperature=0.5, eta=1.0, vectorize_particles=True,
                 max_plate_nesting=float("inf"), strict_enumeration_warning=True):
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.eta = float(temperature), float(eta)
        super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles,
                         max_plate_nesting=max_plate_nesting,
                         strict_enumeration_warning=strict_enumeration_warning)

    def _vec(self, fn):
        return self._vectorized_num_particles(fn) if self.vectorize_particles else fn

    def _hard_sample(self, model, guide, args, kwargs):
        """The evaluation at b = H(z): ``(hard, (model_trace, guide_trace), upstream)``, the
        handler holding z, z~ and the logits, and the trace of the latents drawn before the
        first Bernoulli site (replayed, detached, by the relaxed evaluations)."""
        hard = RebarMessenger()
        model_b, guide_b = self._trace_pair(self._vec(model), self._vec(guide), args, kwargs,
                                            hard)
        latents = [n for n, s in guide_b.nodes.items() if is_latent(s)]
        name = type(self).__name__
        for site in latents:
            if site not in hard.logits and not guide_b.nodes[site]["fn"].has_rsample:
                raise NotImplementedError(f"{name}: guide site {site!r} is neither Bernoulli "
                                          "nor reparameterizable")
        upstream = Trace()
        if hard.logits:
            for site in latents[: min(latents.index(n) for n in hard.logits)]:
                upstream.add_node(site, **{**guide_b.nodes[site],
                                           "value": guide_b.nodes[site]["value"].detach()})
        return hard, (model_b, guide_b), upstream

    def _stack(self, a, b):
        """Two per-sample tensors (the K particles first when vectorized) as one with the
        2K (or 2) stacked copies first."""
        return torch.cat([a, b]) if self.vectorize_particles else torch.stack([a, b])

    def _halves(self, t):
        """The two halves of a stacked tensor (inverse of :meth:`_stack`)."""
        if self.vectorize_particles:
            k = t.shape[0] // 2
            return t[:k], t[k:]
        return t[0], t[1]

    def _relaxed_pair(self, model, guide, args, kwargs, hard, upstream, values):
        """Model and guide traced once with the Bernoulli sites set to ``values``, the relaxed
        values at z and at z~ stacked (:meth:`_stack`) in a plate of 2K (or 2) copies, every
        model and guide parameter detached, the upstream latents replayed (stacked too)."""
        k = self.num_particles if self.vectorize_particles else 1
        wrap, nesting = self._stacking_plate(2 * k)
        stacked = Trace()
        for name, site in upstream.nodes.items():
            v = site["value"]
            if len(site["fn"].batch_shape) == self.max_plate_nesting:  # a full batch shape
                v = self._stack(v, v)
            stacked.add_node(name, **{**site, "value": v})
        handler = RebarMessenger(values)
        with detached_parameters(guide, model) as frozen_guide, pyro.validation_enabled(False):
            m, g = self._trace_pair(
                wrap(model), wrap(frozen_guide), args, kwargs,
                lambda fn, h=handler: poutine.replay(h(fn), trace=stacked),
                max_plate_nesting=nesting)
        for name, logits in hard.logits.items():
            for half in self._halves(handler_logits(g, name)):
                if not is_capturing() and not torch.equal(logits.detach(), half.detach()):
                    raise NotImplementedError(
                        f"{type(self).__name__}: the logits of Bernoulli site {name!r} depend "
                        "on another latent drawn after the first Bernoulli site")
        return m, g

    def _sample(self, model, guide, args, kwargs):
        hard, traces, upstream = self._hard_sample(model, guide, args, kwargs)
        if not hard.logits:  # nothing to relax: the reparameterized gradient of f(z)
            return hard, traces, None
        lam = self.temperature
        values = {n: self._stack(torch.sigmoid(hard.z[n] / lam),
                                 torch.sigmoid(hard.z_tilde[n] / lam)) for n in hard.logits}
        m, g = self._relaxed_pair(model, guide, args, kwargs, hard, upstream, values)
        lp, lq, _ = self._parts(m, g)
        return hard, traces, self._halves(self.eta * (lp - lq) / data_scale(m))

    def _particles(self, model, guide, args, kwargs):
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        n = 1 if self.vectorize_particles else self.num_particles
        return [self._sample(model, guide, args, kwargs) for _ in range(n)]

    def _surrogate(self, samples):
        objective, surrogate = 0.0, 0.0
        for hard, (model_b, guide_b), relaxed in samples:
            scale = data_scale(model_b)
            log_p, log_q, score = self._parts(model_b, guide_b)
            f_b = (log_p - log_q) / scale
            direct = sum((guide_b.nodes[n]["log_prob"].sum() for n in hard.logits), torch.zeros(()))
            objective = objective + f_b.sum()
            surrogate = surrogate + f_b.sum() + (direct - direct.detach()) / scale
            if relaxed is not None:
                c = relaxed
                surrogate = (surrogate + ((f_b.detach() - c[1].detach()) * score).sum()
                             + (c[0] - c[1]).sum())
        k = self.num_particles
        return scale * objective / k, scale * surrogate / k


def handler_logits(guide_trace, name):
    return bernoulli_logits(guide_trace.nodes[name]["fn"])
