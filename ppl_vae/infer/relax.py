"""RELAX: REINFORCE with a learned control variate, trained to minimize the variance of the
gradient estimate (Grathwohl et al. 2018), for the Bernoulli sites of any guide."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from pyro import poutine
from torch import nn

from ppl_vae.infer.baselines import _data_dim
from ppl_vae.infer.multi_sample_elbo import MultiSampleELBO
from ppl_vae.infer.rebar import REBAR
from ppl_vae.infer.util import data_scale
from ppl_vae.poutine.trace import param_site_tensors

__all__ = ["RELAX", "RelaxControlVariate"]


class RelaxControlVariate(nn.Module):
    r"""The learned control variate of :class:`RELAX`,

    .. math::

        c_\psi(z) = \eta\, f\big(\sigma(z / \lambda)\big) + r_\rho(x, z),
        \qquad \psi = (\eta, \lambda, \rho),

    REBAR's Concrete control variate [1] with a free scale :math:`\eta` and temperature
    :math:`\lambda` (kept as :math:`\log \lambda`), plus a free-form network :math:`r_\rho`
    of the data point and the logistic sample :math:`z` (all Bernoulli sites of the point,
    flattened), as RELAX uses on discrete latents [2]. An MLP with ``LeakyReLU(0.3)`` hidden
    layers (input size found on the first call: ``torch.nn.LazyLinear``); its output layer
    starts at zero, so the control variate starts as REBAR's. Without the network
    (``network=False``), training :math:`(\eta, \lambda)` by the variance objective is REBAR's
    online tuning [1].

    :param float temperature: initial :math:`\lambda > 0`. Default 0.5.
    :param float eta: initial :math:`\eta`. Default 1.0.
    :param hidden: the hidden widths of :math:`r_\rho`. Default ``(137,)``.
    :type hidden: sequence of int
    :param bool network: use :math:`r_\rho` (else :math:`r = 0`). Default True.

    Example::

        from ppl_vae.infer.relax import RelaxControlVariate

        cv = RelaxControlVariate(temperature=0.5, hidden=(64,))
        assert abs(float(cv.temperature) - 0.5) < 1e-6

    **References**

    [1] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein, "REBAR: Low-variance,
    unbiased gradient estimates for discrete latent variable models", NeurIPS 2017.

    [2] W. Grathwohl, D. Choi, Y. Wu, G. Roeder, D. Duvenaud, "Backpropagation through the
    void: optimizing control variates for black-box gradient estimation", ICLR 2018.
    """

    def __init__(self, temperature: float = 0.5, eta: float = 1.0,
                 hidden: Sequence[int] = (137,), network: bool = True):
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.log_temperature = nn.Parameter(torch.tensor(math.log(float(temperature))))
        self.eta = nn.Parameter(torch.tensor(float(eta)))
        self.net = None
        if network:
            hidden = [int(h) for h in hidden]
            if not hidden or min(hidden) < 1:
                raise ValueError(f"the control network needs hidden widths >= 1, got {hidden}")
            layers: list[nn.Module] = [nn.LazyLinear(hidden[0]), nn.LeakyReLU(0.3)]
            for a, b in zip(hidden[:-1], hidden[1:]):
                layers += [nn.Linear(a, b), nn.LeakyReLU(0.3)]
            last = nn.Linear(hidden[-1], 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.net = nn.Sequential(*layers, last)

    @property
    def temperature(self) -> torch.Tensor:
        """:math:`\\lambda = \\exp(\\log \\lambda)`."""
        return self.log_temperature.exp()

    def residual(self, features: torch.Tensor) -> torch.Tensor:
        """:math:`r_\\rho` on ``(..., n_features)`` inputs: ``(...)`` (computed in the module's
        dtype, returned in the input's)."""
        out = self.net(features.to(self.log_temperature.dtype)).squeeze(-1)
        return out.to(features.dtype)


def _base_logits(fn):
    """The logits tensor a (possibly wrapped) Bernoulli's ``log_prob`` is computed from."""
    while not isinstance(fn, torch.distributions.Bernoulli):
        fn = fn.base_dist
    return fn.logits


def _per_point(value: torch.Tensor, site, num_points: int) -> torch.Tensor:
    """``value`` of a site as ``(..., N, features)``: the dims after the data plate's
    (inner plates, event dims) flattened. Raises where the data plate cannot be told."""
    dim = _data_dim(site, num_points)
    if dim is None:
        raise NotImplementedError(f"RELAX's control network: Bernoulli site {site['name']!r} is "
                                  "not in the data plate (use control_network=False)")
    pos = value.dim() - len(site["fn"].event_shape) + dim
    return value.reshape(value.shape[: pos + 1] + (-1,))


class RELAX(REBAR):
    r"""The RELAX gradient estimator [1] of the ELBO for the Bernoulli latent sites of any
    guide: REBAR's [2] estimator with the control variate a learned function
    :math:`c_\psi` (:class:`RelaxControlVariate`, an objective-owned module), trained to
    minimize the variance of the estimate.

    With logits :math:`\alpha = \alpha_\phi(x)`, :math:`z = \alpha + \log\frac{u}{1-u}`,
    :math:`b = H(z) \sim \mathrm{Bernoulli}(\sigma(\alpha))`, :math:`\tilde z \sim p(z | b)`
    (reparameterized given :math:`b`) and :math:`f = \log p_\theta(x, \cdot) - \log
    q_\phi(\cdot|x)`,

    .. math::

        \hat g_\phi = \big( f(b) - c_\psi(\tilde z) \big) \nabla_\phi \log q_\phi(b)
        + \nabla_\phi c_\psi(z) - \nabla_\phi c_\psi(\tilde z),
        \qquad
        \psi \leftarrow \psi - \gamma\, \nabla_\psi \big\| \hat g_\phi \big\|^2

    (Algorithm 2 of [1]; unbiased for any :math:`\psi`, and since :math:`\mathbb{E}[\hat
    g_\phi]` does not depend on :math:`\psi`, :math:`\nabla_\psi \mathbb{E}\|\hat g_\phi\|^2 =
    \nabla_\psi \sum \mathrm{Var}[\hat g_\phi]`). Each call accumulates into ``.grad`` the
    estimate :math:`-\hat g` for the model and guide parameters and :math:`\nabla_\psi \|\hat
    g_\phi\|^2` for the control variate's parameters, so one optimizer step trains both. The
    squared norm is over the guide's parameters (``variance="parameters"``: the ``nn.Module``
    under the guide's handlers and its traced ``param`` sites; the logits where there are none)
    or over the Bernoulli logits (``variance="logits"``, cheaper: no second-order pass through
    the guide). :math:`f` at :math:`\sigma(z/\lambda)` and :math:`\sigma(\tilde z/\lambda)` is
    evaluated with the model and guide parameters held fixed (as in
    :class:`~ppl_vae.infer.rebar.REBAR`), :math:`\nabla_z c_\psi` by autograd with a graph to
    :math:`\psi` (double backward through the relaxed evaluations). :math:`\theta` and
    reparameterized continuous sites get :math:`\nabla f(b)`; the direct :math:`\nabla_\phi
    \log q(b)` term (mean zero) is left out; the sites, the replaying of upstream latents and
    the restrictions are REBAR's. Three model evaluations per sample (two traces, as REBAR's),
    K samples averaged; the
    variance objective is that of the K-sample average. ``loss`` is minus the ELBO estimate
    :math:`f(b)` (the hard evaluation only).

    :param int num_particles: K samples per data point.
    :param control_variate: the :class:`RelaxControlVariate` (default: a new one with its
        defaults).
    :param str variance: ``"parameters"`` or ``"logits"``: what the squared norm is over.
    :param bool vectorize_particles: draw the K samples in one vectorized trace.
    :param max_plate_nesting: as in :class:`~pyro.infer.elbo.ELBO`.
    :param bool strict_enumeration_warning: as in :class:`~pyro.infer.elbo.ELBO`.

    **References**

    [1] W. Grathwohl, D. Choi, Y. Wu, G. Roeder, D. Duvenaud, "Backpropagation through the
    void: optimizing control variates for black-box gradient estimation", ICLR 2018.

    [2] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein, "REBAR: Low-variance,
    unbiased gradient estimates for discrete latent variable models", NeurIPS 2017.

    Example::

        import torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.infer.objectives import make_objective
        from ppl_vae.infer.svi import SVI
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        objective = make_objective("relax")  # RELAX + its RelaxControlVariate module
        svi = SVI(model, guide, objective, lr=1e-3)  # trains the control variate too
        loss = svi.step(torch.rand(8, 20).bernoulli())
        control_variate = objective.modules["control_variate"]
    """

    compilable = False  # last_variance, a diagnostic, is state outside the graph


    def __init__(self, num_particles=1, control_variate=None, variance="parameters",
                 vectorize_particles=True, max_plate_nesting=float("inf"),
                 strict_enumeration_warning=True):
        if variance not in ("parameters", "logits"):
            raise ValueError(f"variance must be 'parameters' or 'logits', got {variance!r}")
        self.control_variate = (RelaxControlVariate() if control_variate is None
                                else control_variate)
        self.variance = variance
        #: ``||g_phi||^2`` of the last call that trained the control variate (a float)
        self.last_variance = None
        MultiSampleELBO.__init__(self, num_particles=num_particles,
                                 vectorize_particles=vectorize_particles,
                                 max_plate_nesting=max_plate_nesting,
                                 strict_enumeration_warning=strict_enumeration_warning)

    # REBAR's fixed options, for the code paths shared with it
    @property
    def temperature(self):
        return self.control_variate.temperature

    @property
    def eta(self):
        return self.control_variate.eta

    def _controls(self, model, guide, args, kwargs, hard, upstream, inputs, sites,
                  create_graph):
        """c_psi at z and at z~ (per data point; one stacked relaxed evaluation) and its
        gradients with respect to them (with a graph to psi when ``create_graph``)."""
        cv = self.control_variate
        leaves = [{n: z.detach().requires_grad_() for n, z in zs.items()}
                  for zs in (hard.z, hard.z_tilde)]
        stacked = {n: self._stack(leaves[0][n], leaves[1][n]) for n in hard.logits}
        lam = cv.temperature
        values = {n: torch.sigmoid(leaf / lam) for n, leaf in stacked.items()}
        m, g = self._relaxed_pair(model, guide, args, kwargs, hard, upstream, values)
        lp, lq, _ = self._parts(m, g)
        c = cv.eta * (lp - lq) / data_scale(m)
        if cv.net is not None:
            c = c + self._residual(inputs, stacked, sites, c)
        flat = [leaf for half in leaves for leaf in half.values()]
        grads = torch.autograd.grad(c.sum(), flat, create_graph=create_graph)
        names = list(hard.logits)
        g_z = dict(zip(names, grads[: len(names)]))
        g_t = dict(zip(names, grads[len(names):]))
        c_z, c_t = self._halves(c)
        return c_z, c_t, g_z, g_t

    def _residual(self, inputs, leaves, sites, like):
        if not torch.is_tensor(inputs):
            raise NotImplementedError("RELAX's control network needs the data as the guide's "
                                      "first argument (or x=); use control_network=False")
        n = inputs.shape[0]
        parts = [_per_point(leaf, sites[name], n) for name, leaf in leaves.items()]
        parts.append(inputs.reshape(n, -1))
        lead = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
        features = torch.cat([p.expand(lead + p.shape[-1:]) for p in parts], -1)
        r = self.control_variate.residual(features)  # (..., N)
        dim = _data_dim(next(iter(sites.values())), n)
        r = r.reshape(r.shape + (1,) * (-1 - dim))
        return r.expand(torch.broadcast_shapes(r.shape, like.shape))

    def _variance_targets(self, guide, guide_traces, logits):
        if self.variance == "logits":
            return logits
        params: dict[int, torch.Tensor] = {}
        root = poutine.unwrap(guide)
        if isinstance(root, nn.Module):
            params.update((id(p), p) for p in root.parameters())
        for trace in guide_traces:
            for t in param_site_tensors(trace):
                params.setdefault(id(t), t)
        found = [p for p in params.values() if torch.is_tensor(p) and p.requires_grad]
        return found or logits

    def loss(self, model, guide, *args, **kwargs):
        """-ELBO estimate from the hard evaluations f(b) (a float)."""
        with torch.no_grad(), self._validation():
            if self.max_plate_nesting == float("inf"):
                self._guess_max_plate_nesting(model, guide, args, kwargs)
            n = 1 if self.vectorize_particles else self.num_particles
            total, scale = 0.0, 1.0
            for _ in range(n):
                _, (model_b, guide_b), _ = self._hard_sample(model, guide, args, kwargs)
                scale = data_scale(model_b)
                log_p, log_q, _ = self._parts(model_b, guide_b)
                total += float(((log_p - log_q) / scale).sum())
        return -scale * total / self.num_particles

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """-ELBO estimate (a float); accumulates the RELAX estimate into the model and guide
        parameters' ``.grad`` and the variance objective's gradient into the control
        variate's."""
        with self._validation():
            return self._loss_and_grads(model, guide, args, kwargs)

    def _loss_and_grads(self, model, guide, args, kwargs):
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        cv = self.control_variate
        train = torch.is_grad_enabled() and any(p.requires_grad for p in cv.parameters())
        inputs = args[0] if args else kwargs.get("x")
        objective, surrogate, variance_surrogate = 0.0, 0.0, 0.0
        guide_traces, logits = [], []
        scale = 1.0
        for _ in range(1 if self.vectorize_particles else self.num_particles):
            hard, (model_b, guide_b), upstream = self._hard_sample(model, guide, args, kwargs)
            sites = {n: guide_b.nodes[n] for n in hard.logits}
            scale = data_scale(model_b)
            log_p, log_q, score = self._parts(model_b, guide_b)
            f_b = (log_p - log_q) / scale
            direct = sum((guide_b.nodes[n]["log_prob"].sum() for n in hard.logits),
                         torch.zeros(()))
            base = f_b.sum() + (direct - direct.detach()) / scale
            objective = objective + f_b.detach().sum()
            hard_part, var_part = base, base
            if hard.logits:
                _, c_t, g_z, g_t = self._controls(model, guide, args, kwargs, hard, upstream,
                                                  inputs, sites, train)
                for name in hard.logits:
                    z, zt = hard.z[name], hard.z_tilde[name]
                    hard_part = (hard_part + (z * g_z[name].detach()).sum()
                                 - (zt * g_t[name].detach()).sum())
                    var_part = var_part + (z * g_z[name]).sum() - (zt * g_t[name]).sum()
                hard_part = hard_part + ((f_b.detach() - c_t.detach()) * score).sum()
                var_part = var_part + ((f_b.detach() - c_t) * score).sum()
                guide_traces.append(guide_b)
                # the logits tensors both log q(b) and z are computed from (not the expanded
                # views recorded by the handler, which log q(b) does not pass through)
                logits.extend(_base_logits(s["fn"]) for s in sites.values())
            surrogate = surrogate + hard_part
            variance_surrogate = variance_surrogate + var_part
        k = self.num_particles
        surrogate = scale * surrogate / k
        if train and logits:
            variance_surrogate = scale * variance_surrogate / k
            targets = self._variance_targets(guide, guide_traces, logits)
            grads = torch.autograd.grad(variance_surrogate, targets, create_graph=True,
                                        allow_unused=True)
            variance = sum((g.pow(2).sum() for g in grads if g is not None), torch.zeros(()))
            params = [p for p in cv.parameters() if p.requires_grad]
            if variance.requires_grad:
                cv_grads = torch.autograd.grad(variance, params, retain_graph=True,
                                               allow_unused=True)
                for p, g in zip(params, cv_grads):
                    if g is not None:
                        p.grad = g if p.grad is None else p.grad + g
            self.last_variance = float(variance.detach())
        if torch.is_tensor(surrogate) and surrogate.requires_grad:
            (-surrogate).backward(retain_graph=self.retain_graph)
        loss = -(scale * objective / k).item()
        return loss
