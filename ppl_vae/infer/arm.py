"""ARM: the augment-REINFORCE-merge estimator for Bernoulli latents (Yin & Zhou 2019), and the
effect handler that draws its antithetic pairs (shared with :mod:`ppl_vae.infer.disarm`)."""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace

from ppl_vae.infer.multi_sample_elbo import MultiSampleELBO, bernoulli_logits
from ppl_vae.infer.util import data_scale
from ppl_vae.poutine.capture import is_capturing
from ppl_vae.poutine.trace import is_latent

__all__ = ["ARM", "AntitheticBernoulliMessenger"]


class AntitheticBernoulliMessenger(Messenger):
    """Effect handler: draw every latent Bernoulli site as ``b = 1[u < sigmoid(logits)]`` from
    uniform noise ``u`` (recorded in ``self.noise``), or, given the ``noise`` of a first draw, as
    its antithetic partner ``1[1 - u < sigmoid(logits)]``. The logits of each site are recorded
    in ``self.logits`` (with their gradient path). Put it around the guide *outside* any
    vectorized particle plate, so that it sees the sites' full batch shapes.

    With ``stacked=K`` both members of K pairs are drawn in one run: the sites' leftmost
    dimension (a plate of 2K copies) holds ``u`` in its first K entries and ``1 - u`` in the
    last K (``u`` of K entries is recorded).

    :param dict noise: the ``noise`` of the first draw of the pair, or None for a first draw.
    :param int stacked: K, for a run that draws both members of K pairs (or None).
    """

    def __init__(self, noise=None, stacked=None):
        super().__init__()
        self.antithetic = noise is not None
        self.noise = {} if noise is None else noise
        self.logits = {}
        self.stacked = stacked

    def _pyro_sample(self, msg):
        if not is_latent(msg) or msg["value"] is not None:
            return
        logits = bernoulli_logits(msg["fn"])
        if logits is None:
            return
        name = msg["name"]
        if self.stacked:
            k = self.stacked
            if logits.shape[0] != 2 * k:
                raise NotImplementedError(f"site {msg['name']!r}: expected the {2 * k} stacked "
                                          f"copies in its leftmost dim, got {logits.shape}")
            u = torch.rand((k,) + logits.shape[1:], dtype=logits.dtype, device=logits.device)
            self.noise[name] = u
            self.logits[name] = logits
            msg["value"] = (torch.cat([u, 1.0 - u]) < torch.sigmoid(logits.detach())).to(
                logits.dtype)
            return
        if self.antithetic:
            u = 1.0 - self.noise[name]
        else:
            u = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device)
            self.noise[name] = u
        self.logits[name] = logits
        msg["value"] = (u < torch.sigmoid(logits.detach())).to(logits.dtype)


class ARM(MultiSampleELBO):
    r"""The augment-REINFORCE-merge (ARM) gradient estimator [1] of the ELBO for the Bernoulli
    latent sites of any guide, with K antithetic pairs.

    For a factorized Bernoulli :math:`q(b) = \prod_j \mathrm{Bernoulli}(b_j; \sigma(\alpha_j))`
    with logits :math:`\alpha = \alpha_\phi(x)` and :math:`f(b) = \log p_\theta(x, b) -
    \log q_\phi(b|x)`, draw :math:`u \sim U(0, 1)^J` and the antithetic pair

    .. math::

        b = \mathbf{1}[u < \sigma(\alpha)], \qquad \tilde b = \mathbf{1}[1 - u < \sigma(\alpha)],

        \nabla_\alpha \mathbb{E}_q[f(b)] \approx \big( f(\tilde b) - f(b) \big)
        \big( u - \tfrac{1}{2} \big)

    (eq. (5) of [1], an unbiased estimate; both :math:`b` and :math:`\tilde b` are draws from
    q). The estimate is chained to :math:`\phi` through the logits, :math:`\alpha` read from the
    guide trace's site ``fn`` (a ``Bernoulli(logits=...)``, possibly ``.to_event``-wrapped); the
    pair is drawn by :class:`AntitheticBernoulliMessenger`, so neither model nor guide has to
    know. The direct dependence of :math:`f` on :math:`\phi` through :math:`\log q_\phi(b|x)`
    has expectation zero and is left out; :math:`\theta` gets
    :math:`\tfrac12 (\nabla_\theta \log p(x, b) + \nabla_\theta \log p(x, \tilde b))`.
    Reparameterized continuous sites keep their pathwise gradient (averaged over the pair);
    those sampled before the first Bernoulli site are shared by the pair (replayed), the later
    ones are drawn afresh, which leaves the estimator unbiased. Several Bernoulli sites form one
    joint factorized Bernoulli, which requires that no Bernoulli site's logits depend on
    another latent drawn after the first Bernoulli site (checked: the pair's logits must agree;
    a hierarchy of Bernoulli layers needs the layer-wise estimator of [1], not offered). Any
    other non-reparameterized site is refused; a guide without Bernoulli sites gets the
    reparameterized gradient averaged over 2K independent samples. Per data point and scaled
    by the subsampling scale; with K pairs the estimates are averaged (2K model evaluations:
    where the guide's first latent is a Bernoulli site, as found on the first call, both
    members of the pairs are drawn in one trace, a plate of 2K stacked copies; else in two).
    ``loss`` is minus the ELBO estimate averaged over the 2K samples.

    :param int num_particles: K, the number of antithetic pairs.
    :param bool vectorize_particles: draw the K pairs in one vectorized trace each side.
    :param max_plate_nesting: as in :class:`~pyro.infer.elbo.ELBO`.

    **References**

    [1] M. Yin, M. Zhou, "ARM: Augment-REINFORCE-merge gradient for stochastic binary
    networks", ICLR 2019.

    Example::

        import torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        x = torch.rand(8, 20).bernoulli()
        from ppl_vae.infer.arm import ARM
        loss = ARM(num_particles=1).loss_and_grads(model, guide, x)   # one pair: 2 samples
    """

    def _signal(self, f_a, f_b, u, logits, b_a, b_b):
        """d objective / d logits for one pair (detached), broadcast to the site's shape."""
        return (f_b - f_a) * (u - 0.5)

    def _pair(self, model, guide, args, kwargs):
        first = AntitheticBernoulliMessenger()
        model_a, guide_a = self._trace_pair(model, guide, args, kwargs, first)
        latents = [name for name, site in guide_a.nodes.items() if is_latent(site)]
        for name in latents:
            if name not in first.logits and not guide_a.nodes[name]["fn"].has_rsample:
                raise NotImplementedError(
                    f"{type(self).__name__}: guide site {name!r} is neither Bernoulli nor "
                    "reparameterizable")
        upstream = Trace()  # without Bernoulli sites the pair is two independent draws
        first_bernoulli = min((latents.index(n) for n in first.logits), default=0)
        for name in latents[:first_bernoulli]:
            upstream.add_node(name, **guide_a.nodes[name])
        second = AntitheticBernoulliMessenger(noise=first.noise)
        model_b, guide_b = self._trace_pair(
            model, guide, args, kwargs, lambda g: poutine.replay(second(g), trace=upstream))
        for name, logits in first.logits.items():
            if not is_capturing() and not torch.equal(
                    logits.detach(), second.logits[name].detach()):
                raise NotImplementedError(
                    f"{type(self).__name__}: the logits of Bernoulli site {name!r} depend on "
                    "another latent drawn after the first Bernoulli site; the antithetic pair "
                    "needs a single factorized Bernoulli layer")
        return first, (model_a, guide_a), (model_b, guide_b)

    def _stacked_pair(self, model, guide, args, kwargs, k):
        """Both members of ``k`` pairs in one trace of model and guide (2k stacked copies), or
        None where a latent is drawn before the first Bernoulli site (the pair must share it:
        the two-run path)."""
        wrap, nesting = self._stacking_plate(2 * k)
        handler = AntitheticBernoulliMessenger(stacked=k)
        model_s, guide_s = self._trace_pair(wrap(model), wrap(guide), args, kwargs, handler,
                                            max_plate_nesting=nesting)
        latents = [name for name, site in guide_s.nodes.items() if is_latent(site)]
        if not handler.logits or latents[0] not in handler.logits:
            return None
        for name in latents:
            if name not in handler.logits and not guide_s.nodes[name]["fn"].has_rsample:
                raise NotImplementedError(
                    f"{type(self).__name__}: guide site {name!r} is neither Bernoulli nor "
                    "reparameterizable")
        for name, logits in handler.logits.items():
            if not is_capturing() and not torch.equal(logits[:k].detach(), logits[k:].detach()):
                raise NotImplementedError(
                    f"{type(self).__name__}: the logits of Bernoulli site {name!r} depend on "
                    "another latent drawn after the first Bernoulli site; the antithetic pair "
                    "needs a single factorized Bernoulli layer")
        return handler, (model_s, guide_s), k

    def _particles(self, model, guide, args, kwargs):
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        k = self.num_particles if self.vectorize_particles else 1
        # One trace per pair (both members stacked) where the guide's first latent is a
        # Bernoulli site, as found on the first call; else (or where a later call finds
        # otherwise) the pair's two runs, the second replaying the upstream latents.
        stack = getattr(self, "_stack", None)
        if stack:
            pairs = [self._stacked_pair(model, guide, args, kwargs, k)
                     for _ in range(self.num_particles // k)]
            if all(p is not None for p in pairs):
                return pairs
            self._stack = False
        if self.vectorize_particles:
            model, guide = self._vectorized_num_particles(model), self._vectorized_num_particles(
                guide)
            pairs = [self._pair(model, guide, args, kwargs)]
        else:
            pairs = [self._pair(model, guide, args, kwargs) for _ in range(self.num_particles)]
        if stack is None:
            handler, (_, guide_a), _ = pairs[0]
            latents = [n for n, site in guide_a.nodes.items() if is_latent(site)]
            self._stack = bool(handler.logits) and latents[0] in handler.logits
        return pairs

    def _surrogate(self, pairs):
        objective, surrogate = 0.0, 0.0
        for pair in pairs:
            if len(pair) == 3 and isinstance(pair[2], int):  # stacked: one trace, 2k copies
                handler, (model_s, guide_s), k = pair
                halves = [(model_s, guide_s, slice(0, k)), (model_s, guide_s, slice(k, 2 * k))]
                traces = [(model_s, guide_s)]
            else:
                handler, (model_a, guide_a), (model_b, guide_b) = pair
                halves = [(model_a, guide_a, slice(None)), (model_b, guide_b, slice(None))]
                traces = [(model_a, guide_a), (model_b, guide_b)]
            scale = data_scale(traces[0][0])
            log_ws = []
            for model_trace, guide_trace in traces:
                log_p, log_q, _ = self._parts(model_trace, guide_trace)
                log_w = (log_p - log_q) / scale
                log_ws.append(log_w)
                # drop the direct d log q(b) / d phi of the Bernoulli sites (mean zero)
                direct = sum((guide_trace.nodes[n]["log_prob"].sum() for n in handler.logits),
                             torch.zeros(()))
                objective = objective + log_w.sum() / 2
                surrogate = surrogate + (log_w.sum() + (direct - direct.detach()) / scale) / 2
            if len(log_ws) == 1:
                f = [log_ws[0].detach()[part] for _, _, part in halves]
            else:
                f = [w.detach() for w in log_ws]
            (_, guide_a, part_a), (_, guide_b, part_b) = halves
            for name, logits in handler.logits.items():
                site_a, site_b = guide_a.nodes[name], guide_b.nodes[name]
                logits_a = logits[part_a]
                signal = self._signal(self.at_site(f[0], site_a), self.at_site(f[1], site_a),
                                      handler.noise[name], logits_a.detach(),
                                      site_a["value"][part_a], site_b["value"][part_b])
                if torch.is_tensor(site_a["mask"]):
                    mask = self.at_site(site_a["mask"].to(signal.dtype), site_a)
                    signal = signal * (mask[part_a] if mask.dim() == signal.dim() else mask)
                surrogate = surrogate + (signal * logits_a).sum()
        k = self.num_particles
        return scale * objective / k, scale * surrogate / k
