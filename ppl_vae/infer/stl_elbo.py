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
    """Trace_ELBO with the path-derivative ("sticking the landing") gradient for the guide."""

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        rescore_with_detached_parameters(guide, guide_trace, args, kwargs, model=model)
        return model_trace, guide_trace
