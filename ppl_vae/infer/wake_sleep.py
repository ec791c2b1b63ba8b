"""The wake-sleep algorithm (Hinton, Dayan, Frey & Neal 1995) as a Pyro objective.

Two phases per step, each a gradient of its own objective:

* **wake-theta**: z ~ q_phi(z|x) for the real x (the sample carries *no* gradient path), then
  ascend log p_theta(x, z): grad_theta = E_q[grad_theta log p_theta(x, z)];
* **sleep-phi**: dream ``(z', x') ~ p_theta(z) p_theta(x|z)`` by running the model with its
  observations sampled (``poutine.uncondition``), then ascend ``log q_phi(z'|x')``:
  ``grad_phi = E_p[grad_phi log q_phi(z'|x')]``, i.e. descend
  ``KL(p_theta(z|x) || q_phi(z|x))`` averaged over ``x ~ p_theta(x)`` (the *inclusive* KL, on
  dreamed rather than real data).

Neither phase differentiates through a sample, so any latent type works (discrete included) and
``can_infer_discrete = True``. The two phases are not the gradient of one objective; the number
reported as the loss is the usual single-sample -ELBO, log p(x, z) - log q(z|x) at the wake
sample, so it is comparable with every other objective.

Convention the objective needs (what Kingma & Welling 2014 compare AEVB against): model and guide
take the observations as their first positional argument (``model(x, ...)``, ``guide(x, ...)``;
all ppl_vae models and guides do); the dream runs ``uncondition(model)(x, ...)`` with the real
minibatch only fixing the shape, and the guide is then called with the dreamed value of the
model's observed site ``observed`` in place of ``x``. ``num_data`` and other keyword arguments are
passed to both phases unchanged, so a subsampled data plate scales them alike.
"""

from __future__ import annotations

import pyro.infer
import torch
from pyro import poutine
from pyro.util import warn_if_nan

from ppl_vae.poutine.trace import latent_values

__all__ = ["WakeSleep"]


class WakeSleep(pyro.infer.ELBO):
    r"""The wake-sleep algorithm [1]: wake-theta on real data, sleep-phi on dreams.

    Each step accumulates two gradients, neither of which differentiates through a sample:

    .. math::

        \text{wake-}\theta: \quad \nabla_\theta \log p_\theta(x, z),
        \quad z \sim q_\phi(z \mid x) \text{ for the real } x;
        \qquad
        \text{sleep-}\phi: \quad \nabla_\phi \log q_\phi(z' \mid x'),
        \quad (z', x') \sim p_\theta(z)\, p_\theta(x \mid z).

    The sleep phase descends :math:`\mathbb{E}_{p_\theta(x)}\,\mathrm{KL}(p_\theta(z \mid x)
    \,\|\, q_\phi(z \mid x))`, the inclusive KL on dreamed rather than real data; the two phases
    are not the gradient of one objective. Any latent type works, discrete included. ``loss``
    and ``loss_and_grads`` return the single-sample
    :math:`-[\log p_\theta(x, z) - \log q_\phi(z \mid x)]` at the wake sample (averaged over
    particles), comparable with every other objective. Model and guide must take the
    observations as their first positional argument; the dream runs
    ``poutine.uncondition(model)`` and the guide is called with the dreamed value of site
    ``observed``. Keyword arguments (``num_data``) reach both phases unchanged.

    :param int num_particles: wake samples and dreams per step, run one after another and
        averaged. Default 1.
    :param str observed: the model's observed site whose dreamed value is fed to the guide.
        Default ``"x"``.
    :param kwargs: other keyword arguments of :class:`pyro.infer.ELBO`
        (``vectorize_particles`` is ignored).

    Example::

        import pyro, torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.infer import WakeSleep
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), WakeSleep())
        loss = svi.step(torch.rand(8, 20).bernoulli(), num_data=100)  # -ELBO at the wake sample

    **References**

    [1] G. E. Hinton, P. Dayan, B. J. Frey, R. M. Neal, *The "Wake-Sleep" Algorithm for
    Unsupervised Neural Networks*, Science 268, 1995.
    """

    can_infer_discrete = True  # no gradient flows through any sample

    def __init__(self, num_particles: int = 1, observed: str = "x", **kwargs):
        kwargs.pop("vectorize_particles", None)
        super().__init__(num_particles=num_particles, vectorize_particles=False, **kwargs)
        self.observed = observed

    def _get_trace(self, model, guide, args, kwargs):
        """(model trace, guide trace) of one wake sample z ~ q(z|x) (ELBO's abstract hook)."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs)
        return model_trace, guide_trace

    def _wake(self, model, guide, args, kwargs):
        """(wake-theta surrogate loss, -ELBO estimate) for one sample z ~ q(z|x)."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        fixed = latent_values(guide_trace)
        model_trace = poutine.trace(poutine.condition(model, data=fixed)).get_trace(*args, **kwargs)
        log_p = model_trace.log_prob_sum()
        elbo = log_p.detach() - guide_trace.log_prob_sum().detach()
        return -log_p, -elbo

    def _sleep(self, model, guide, args, kwargs):
        """Sleep-phi surrogate loss -log q(z'|x') on one dream (z', x') ~ p."""
        with torch.no_grad():
            dream = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
        if self.observed not in dream.nodes:
            raise ValueError(f"wake-sleep: the model has no site {self.observed!r} to dream "
                             "(pass observed= the name of its observed site)")
        x_dream = dream.nodes[self.observed]["value"].detach()
        latents = {k: v for k, v in latent_values(dream).items() if k != self.observed}
        conditioned = poutine.condition(guide, data=latents)
        guide_trace = poutine.trace(conditioned).get_trace(x_dream, *args[1:], **kwargs)
        return -guide_trace.log_prob_sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        """-ELBO, one sample per particle (a float)."""
        with torch.no_grad():
            total = sum(self._wake(model, guide, args, kwargs)[1].item()
                        for _ in range(self.num_particles))
        loss = total / self.num_particles
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """-ELBO (a float); accumulates the wake-theta and sleep-phi gradients into ``.grad``."""
        total = 0.0
        for _ in range(self.num_particles):
            wake_loss, neg_elbo = self._wake(model, guide, args, kwargs)
            sleep_loss = self._sleep(model, guide, args, kwargs)
            surrogate = (wake_loss + sleep_loss) / self.num_particles
            if surrogate.requires_grad:
                surrogate.backward()
            total += neg_elbo.item()
        loss = total / self.num_particles
        warn_if_nan(loss, "loss")
        return loss
