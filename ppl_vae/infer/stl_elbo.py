"""The "sticking the landing" ELBO gradient (Roeder, Wu & Duvenaud 2017).

With z = g_phi(eps, x) reparameterized, the total derivative of the single-sample ELBO
log p(x, z) - log q_phi(z|x) w.r.t. phi has two parts:

    d/dphi [...] = (d/dz [log p(x, z) - log q_phi(z|x)]) dz/dphi   (path derivative)
                   - (partial/partial phi) log q_phi(z|x)           (score term)

The score term has expectation zero (E_q[grad_phi log q_phi] = 0) but non-zero variance. STL drops
it, i.e. it differentiates log p(x, z) - log q_{stop_grad(phi)}(z|x): still unbiased, and when q
equals the exact posterior the path derivative is identically zero, so the gradient has *zero*
variance at the optimum ("the estimator sticks the landing"). Gradients w.r.t. the model
parameters theta are unchanged.

Implementation: :class:`STL_ELBO` is :class:`pyro.infer.Trace_ELBO` whose guide traces are
re-scored after tracing: the guide is re-run under ``poutine.replay`` on its own trace with its
parameters detached, and each reparameterized latent site's log q is recomputed at the same
(differentiable) value (:func:`~ppl_vae.infer.util.rescore_with_detached_parameters`). Upstream
latents a site's distribution depends on keep their gradient path, so hierarchical guides get the
exact path derivative. Sites that are not reparameterized keep Pyro's score-function treatment.
Restriction: the guide's parameters must be those of the ``nn.Module`` it is (under any effect
handlers) or ``pyro.param`` values; others keep the ordinary (still unbiased) gradient.
"""

from __future__ import annotations

from pyro.infer import Trace_ELBO

from ppl_vae.infer.util import rescore_with_detached_parameters

__all__ = ["STL_ELBO"]


class STL_ELBO(Trace_ELBO):
    r""":class:`pyro.infer.Trace_ELBO` with the "sticking the landing" guide gradient of [1].

    For a reparameterized latent :math:`z = g_\phi(\epsilon, x)` the total derivative of the
    single-sample ELBO splits into a path derivative and a score term,

    .. math::

        \frac{d}{d\phi}\big[\log p_\theta(x, z) - \log q_\phi(z \mid x)\big]
        = \nabla_z \big[\log p_\theta(x, z) - \log q_\phi(z \mid x)\big]
          \frac{\partial z}{\partial \phi}
        - \frac{\partial}{\partial \phi} \log q_\phi(z \mid x),

    and :math:`\mathbb{E}_q[\partial_\phi \log q_\phi(z \mid x)] = 0`. STL drops the score term,
    i.e. differentiates :math:`\log p_\theta(x, z) - \log q_{\bar\phi}(z \mid x)` with
    :math:`\bar\phi = \mathrm{stop\_grad}(\phi)`: still unbiased, and of zero variance when
    :math:`q_\phi(z \mid x)` is the exact posterior. The gradient in the model's parameters
    :math:`\theta`, the loss value and the treatment of sites that are not reparameterizable
    (Pyro's score function) are those of :class:`~pyro.infer.Trace_ELBO`. The guide's
    parameters must be those of the ``nn.Module`` it is, or ``pyro.param`` values (see the
    module docstring); others keep the ordinary (unbiased) gradient.

    :param int num_particles: samples per data point, averaged. Default 1.
    :param max_plate_nesting: bound on the number of nested :func:`pyro.plate` contexts.
        Default infinity: Pyro finds it from a first trace.
    :param bool vectorize_particles: draw the samples in one vectorized pass. Default False.
    :param kwargs: the other keyword arguments of :class:`pyro.infer.Trace_ELBO`.

    Example::

        import pyro, torch
        from ppl_vae.guides import DiagonalNormalGuide
        from ppl_vae.infer import STL_ELBO
        from ppl_vae.models import VAEModel

        model = VAEModel(x_dim=20, latent_dim=2, hidden=(16,))
        guide = DiagonalNormalGuide(x_dim=20, latent_dim=2, hidden=(16,))
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), STL_ELBO())
        loss = svi.step(torch.rand(8, 20).bernoulli(), num_data=100)  # -ELBO estimate

    **References**

    [1] G. Roeder, Y. Wu, D. Duvenaud, *Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference*, NeurIPS 2017.
    """

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        rescore_with_detached_parameters(guide, guide_trace, args, kwargs, model=model)
        return model_trace, guide_trace
