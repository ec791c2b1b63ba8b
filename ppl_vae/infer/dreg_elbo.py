"""Doubly-reparameterized gradient (DReG) of the importance-weighted bound (Tucker et al. 2018).

The IWAE bound (Burda et al. 2016) with K particles z_k = g_phi(eps_k, x) ~ q_phi(z|x),

    L_K = E[ log (1/K) sum_k w_k ],   w_k = p_theta(x, z_k) / q_phi(z_k|x),

has the standard reparameterized gradient sum_k w~_k d/d(theta,phi) log w_k with self-normalized
weights w~_k = w_k / sum_j w_j. For the guide parameters its signal-to-noise ratio *decreases* like
K^(-1/2) as K grows (Rainforth et al. 2018, "Tighter variational bounds are not necessarily
better"). Tucker, Lawson, Gu & Maddison (2018), "Doubly Reparameterized Gradient Estimators for
Monte Carlo Objectives", eq. (5)/(6), apply the reparameterization trick a second time to the
score-function part and obtain the unbiased estimator

    grad_phi L_K   ~=  sum_k  w~_k^2  (d log w_k / d z_k) (d z_k / d phi),
    grad_theta L_K ~=  sum_k  w~_k    grad_theta log w_k          (unchanged),

where d log w_k / d z_k is taken with phi held fixed inside log q_phi (a path derivative, as in
:mod:`ppl_vae.infer.stl_elbo`). For K = 1, w~ = 1 and DReG reduces to STL.

Implementation, on Pyro's trace machinery (:class:`DReG_ELBO` subclasses
:class:`~ppl_vae.infer.iwae_elbo.IWAE_ELBO`, i.e. :class:`pyro.infer.RenyiELBO` at alpha = 0, and
keeps its particle handling):

1. trace the guide; replace each reparameterized latent value z_k in the trace by an *alias*
   (``z.view_as(z)``) and replay the model on it, so that exactly the uses of z_k inside
   log w_k go through the alias (uses inside the guide itself, e.g. by later guide sites, do not);
2. re-score log q at the aliases with detached variational parameters (the guide re-run under
   ``poutine.replay`` on the aliased trace, so a site's dependence on upstream latents goes
   through their aliases too);
3. surrogate  S = sum_k stop_grad(w~_k) log w_k  (gives the theta gradient and w~_k times the
   path derivative), plus a backward hook on each alias that multiplies the gradient reaching
   z_k by w~_k, which turns w~_k into w~_k^2 on the path to phi.

Minibatch scaling as in :class:`~ppl_vae.infer.iwae_elbo.IWAE_ELBO` (outside the log-mean-exp).
All latent sites must be reparameterizable and share the plates of the log-weights (local to the
data plate).
"""

from __future__ import annotations

from pyro import poutine
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_if_enumerated, check_model_guide_match, check_site_shape

from ppl_vae.infer.iwae_elbo import IWAE_ELBO
from ppl_vae.infer.util import is_reparameterized_latent, rescore_with_detached_parameters

__all__ = ["DReG_ELBO"]


class DReG_ELBO(IWAE_ELBO):
    r"""The importance-weighted bound with the doubly-reparameterized gradient of Tucker et al. [1].

    The objective is that of :class:`~ppl_vae.infer.iwae_elbo.IWAE_ELBO`: :math:`K` samples
    :math:`z_k = g_\phi(\epsilon_k, x) \sim q_\phi(z \mid x)`, weights
    :math:`w_k = p_\theta(x, z_k) / q_\phi(z_k \mid x)`, self-normalized
    :math:`\tilde w_k = w_k / \sum_j w_j`, and the bound
    :math:`\mathcal{L}_K = \mathbb{E}[\log \frac{1}{K} \sum_k w_k]`, whose value ``loss`` and
    ``loss_and_grads`` return (negated, with the same minibatch scale :math:`N/B`). The
    gradient estimate is (reference [1], eq. (6))

    .. math::

        \widehat{\nabla_\phi \mathcal{L}_K} = \sum_{k=1}^K \tilde w_k^{\,2}\,
            \frac{\partial \log w_k}{\partial z_k} \frac{\partial z_k}{\partial \phi},
        \qquad
        \widehat{\nabla_\theta \mathcal{L}_K} = \sum_{k=1}^K \tilde w_k\,
            \nabla_\theta \log w_k,

    where :math:`\partial \log w_k / \partial z_k` is taken with :math:`\phi` held fixed inside
    :math:`\log q_\phi` (a path derivative). Both are unbiased. The guide gradient of
    :class:`~ppl_vae.infer.iwae_elbo.IWAE_ELBO` has a signal-to-noise ratio that *falls* like
    :math:`K^{-1/2}` [2]; this one's does not. For :math:`K = 1`, :math:`\tilde w_1 = 1` and the
    estimator is that of :class:`~ppl_vae.infer.stl_elbo.STL_ELBO` [3]. Every latent guide site
    must be reparameterizable and lie in the plates of the log-weights (local to the data
    plate); see the module docstring for how the estimator is built on Pyro's traces.

    :param int num_particles: :math:`K`, the number of samples per data point. Default 2.
    :param max_plate_nesting: bound on the number of nested :func:`pyro.plate` contexts.
        Default infinity: Pyro finds it from a first trace.
    :param bool vectorize_particles: draw the :math:`K` samples in one vectorized pass instead
        of a Python loop. Default False.
    :param bool strict_enumeration_warning: as in :class:`pyro.infer.ELBO`.

    Example::

        import pyro, torch
        from ppl_vae.guides import DiagonalNormalGuide
        from ppl_vae.infer import DReG_ELBO
        from ppl_vae.models import VAEModel

        model = VAEModel(x_dim=20, latent_dim=2, hidden=(16,))
        guide = DiagonalNormalGuide(x_dim=20, latent_dim=2, hidden=(16,))
        elbo = DReG_ELBO(num_particles=5, vectorize_particles=True)
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), elbo)
        loss = svi.step(torch.rand(8, 20).bernoulli(), num_data=100)

    **References**

    [1] G. Tucker, D. Lawson, S. Gu, C. J. Maddison, *Doubly Reparameterized Gradient
    Estimators for Monte Carlo Objectives*, ICLR 2019 (arXiv:1810.04152, 2018).

    [2] T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood, Y. W. Teh,
    *Tighter Variational Bounds are Not Necessarily Better*, ICML 2018.

    [3] G. Roeder, Y. Wu, D. Duvenaud, *Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference*, NeurIPS 2017.
    """

    # ``_get_trace`` is the per-particle extension point of Pyro's ELBO classes. This one follows
    # the steps of ``pyro.infer.enum.get_importance_trace`` (trace the guide, replay the model,
    # prune subsample sites, score, validate) because the latent values must be replaced by
    # aliases *between* tracing the guide and replaying the model, where that function has no
    # hook; an effect handler on the guide would alias the values inside the guide too.
    def _get_trace(self, model, guide, args, kwargs):
        guide_trace = poutine.trace(guide, graph_type="flat").get_trace(*args, **kwargs)
        self._check_reparameterized(guide_trace)
        for site in guide_trace.nodes.values():
            if is_reparameterized_latent(site):
                site["value"] = site["value"].view_as(site["value"])  # the alias
        model_trace = poutine.trace(
            poutine.replay(model, trace=guide_trace), graph_type="flat"
        ).get_trace(*args, **kwargs)
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
        guide_trace = prune_subsample_sites(guide_trace)
        model_trace = prune_subsample_sites(model_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        if is_validation_enabled():
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    check_site_shape(site, self.max_plate_nesting)
            check_if_enumerated(guide_trace)
        rescore_with_detached_parameters(guide, guide_trace, args, kwargs, model=model)
        return model_trace, guide_trace

    def _before_backward(self, weights, latents, vectorized) -> None:
        # The surrogate sum_k w~_k log w_k sends w~_k (d log w_k / d z_k) into each alias z_k;
        # one more factor w~_k there gives the w~_k^2 of Tucker et al. (2018), eq. (6).
        per_particle = [(weights, latents)] if vectorized else list(zip(weights, latents))
        for w, sites in per_particle:
            for value, shape in sites:
                if not value.requires_grad:
                    continue
                w_event = _weight_view(w, shape, value.dim())
                if w_event is None:
                    raise NotImplementedError(
                        "DReG_ELBO: every latent site must share the plates of the log-weights "
                        f"or only the particle plate (site batch shape {tuple(shape)} vs "
                        f"weights {tuple(w.shape)})"
                    )
                value.register_hook(lambda grad, w_event=w_event: grad * w_event)


def _weight_view(w, shape, value_dim: int):
    """The normalized weights ``w`` viewed to broadcast against a latent value of batch
    ``shape``: element for element where the site shares the weights' plates (its batch shape
    may hold size-1 dims of plates it is not in), else broadcast over the site's further plates
    (a site in an inner plate, or weights per particle only: a global site, or plates not shared
    by every site); None where the shapes do not line up."""
    if shape.numel() == w.numel():
        return w.reshape(shape + (1,) * (value_dim - len(shape)))
    if w.numel() == 1:
        return w.reshape(())
    if tuple(shape[:w.dim()]) == tuple(w.shape):  # the site is in further plates
        return w.reshape(tuple(w.shape) + (1,) * (value_dim - w.dim()))
    return None
