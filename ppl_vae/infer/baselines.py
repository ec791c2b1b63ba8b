"""Control-variate baselines for the score-function estimator, injected by an effect handler.

The score-function gradient of a latent site z with downstream cost
c(z) = log p(x, z) - log q_phi(z|x) (everything the site influences; Pyro's
:class:`~pyro.infer.TraceGraph_ELBO` Rao-Blackwellizes it with the dependency graph) is
(c(z) - b) grad_phi log q_phi(z|x). Any b that does not depend on z leaves it unbiased because
E_q[grad_phi log q] = 0, and b close to E_q[c] lowers its variance (Williams 1992; Mnih & Gregor
2014, "Neural Variational Inference and Learning in Belief Networks", sec. 2.3). Two choices:

* decaying average: b_t = beta b_{t-1} + (1 - beta) c_{t-1} (per data-plate position);
* neural (input-dependent) baseline b_psi(x), trained jointly by minimising E (c - b)^2, where
  b is the whole baseline: the decaying average (if used too) plus b_psi(x) (Mnih & Gregor 2014).

Pyro reads baselines from the guide site's ``infer={"baseline": {...}}``; the
:class:`BaselineMessenger` writes that dict at every latent guide site, so neither the guide nor
the model has to know about baselines. For the neural baseline the handler also multiplies by the
site's subsampling scale (so the network predicts the per-data-point cost) and expands to the
site's batch shape (so it also works with vectorized particles).

Pyro keeps the decaying average in the *global* parameter store under
``__baseline_avg_downstream_cost_<site>``; :class:`AverageBaselineTraceGraph_ELBO` keeps it
private to the ELBO instance instead, so that two objectives (or two models) in one process never
share or clobber it, and restarts it when the batch shape changes (e.g. a smaller last batch).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import pyro
import torch
from pyro.ops.provenance import detach_provenance
from pyro.poutine.messenger import Messenger
from torch import nn

from ppl_vae.infer.no_reparam import NoReparamMessenger
from ppl_vae.infer.tracegraph_elbo import FastTraceGraph_ELBO
from ppl_vae.poutine.trace import is_latent

__all__ = [
    "AverageBaselineTraceGraph_ELBO",
    "BaselineMessenger",
    "NeuralBaseline",
    "score_function_guide",
]

_AVG_PREFIX = "__baseline_avg_downstream_cost_"


def _downstream_shape(batch_shape) -> torch.Size:
    """The shape Pyro gives a site's downstream cost: its batch shape with leading size-1 dims
    dropped (``MultiFrameTensor.sum_to`` squeezes them), e.g. () for a batch of one point."""
    shape = list(batch_shape)
    while shape and shape[0] == 1:
        shape.pop(0)
    return torch.Size(shape)


def _data_dim(msg, num_points: int) -> int | None:
    """The batch dim of the data plate at a site: the vectorized plate with one entry per data
    point (the one named "data" where several have that size), else a plate without a size
    (``pyro.plate("data")``); ``None`` for a global site, in no such plate."""
    frames = [f for f in msg["cond_indep_stack"] if f.vectorized and f.size == num_points]
    if not frames:
        frames = [f for f in msg["cond_indep_stack"] if f.vectorized and f.size in (None, -1)]
        if not frames:
            return None
    if len(frames) > 1:
        frames = [f for f in frames if f.name == "data"] or frames[:0]
    if len(frames) != 1:
        raise ValueError(f"neural baseline at site {msg['name']!r}: cannot tell which plate "
                         f"holds the {num_points} data points (name it 'data')")
    return frames[0].dim


class NeuralBaseline(nn.Module):
    r"""An input-dependent baseline :math:`b_\psi(x)` for the score-function estimator (NVIL [1]).

    An MLP (``tanh`` hidden layers) from a data point to a scalar, its predicted downstream cost.
    Attached to a guide site by :class:`BaselineMessenger` (``network=``), it enters Pyro's
    :class:`~pyro.infer.TraceGraph_ELBO` surrogate as

    .. math::

        \big(c(z) - b(x)\big)\, \nabla_\phi \log q_\phi(z \mid x), \qquad
        b(x) = \bar c + s\, b_\psi(x), \qquad
        \psi \leftarrow \arg\min_\psi\, \big(c(z) - b(x)\big)^2 ,

    where :math:`c(z)` is the site's downstream cost (the terms of :math:`\log p_\theta(x, z) -
    \log q_\phi(z \mid x)` the site influences), :math:`s` the site's subsampling scale
    (:math:`N/B`, so that :math:`b_\psi` predicts a per-data-point cost), and :math:`\bar c`
    the decaying average of :class:`AverageBaselineTraceGraph_ELBO` when one is used as well
    (0 otherwise). Any :math:`b` that does not depend on :math:`z` leaves the gradient unbiased
    [2]. The output layer starts at zero, so until it has learned something the baseline is
    exactly :math:`\bar c`.

    :param x_dim: the number of features of a data point (inputs are flattened), or ``None`` for
        a :class:`torch.nn.LazyLinear` first layer sized on the first call (its parameters then
        exist after the first gradient step, which is when :class:`ppl_vae.infer.svi.SVI`
        collects the objective's modules). Default ``None``.
    :type x_dim: int or None
    :param hidden: the hidden layer widths. Default ``(100,)``.
    :type hidden: sequence of int

    Example::

        import torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.infer.objectives import make_objective
        from ppl_vae.infer.svi import SVI
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        objective = make_objective("score-nn", x_dim=20)  # NeuralBaseline(20) + average
        svi = SVI(model, guide, objective, lr=1e-3)  # trains the baseline network too
        loss = svi.step(torch.rand(8, 20).bernoulli())
        network = objective.modules["baseline"]

    **References**

    [1] A. Mnih, K. Gregor, *Neural Variational Inference and Learning in Belief Networks*,
    ICML 2014.

    [2] R. J. Williams, *Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning*, Machine Learning 8, 1992.
    """

    def __init__(self, x_dim: int | None = None, hidden: Sequence[int] = (100,)):
        super().__init__()
        hidden = [int(h) for h in hidden]
        layers: list[nn.Module] = []
        n_in = None if x_dim is None else int(x_dim)
        for h in [*hidden, 1]:
            layers.append(nn.LazyLinear(h) if n_in is None else nn.Linear(n_in, h))
            layers.append(nn.Tanh())
            n_in = h
        self.net = nn.Sequential(*layers[:-1])
        last = self.net[-1]
        if isinstance(last, nn.Linear) and not isinstance(last, nn.LazyLinear):
            # Start at b_psi = 0: the baseline is then exactly the decaying average (or none)
            # until the network has learned something, instead of adding its random output.
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1) if x.dim() > 2 else x).squeeze(-1)


class BaselineMessenger(Messenger):
    """Effect handler: attach a baseline to every latent (non-observed) guide sample site.

    :param average_beta: if given, use Pyro's decaying-average baseline with this beta.
    :param network: a :class:`NeuralBaseline` (or any module mapping ``inputs`` to per-data-point
        scalars) used as ``nn_baseline``.
    :param inputs: the network's input (the guide's data argument x), captured per call.
    :param sites: optional names of the sites to treat (default: all latent sites).
    """

    def __init__(self, average_beta=None, network=None, inputs=None, sites=None):
        super().__init__()
        if average_beta is None and network is None:
            raise ValueError("BaselineMessenger needs average_beta and/or network")
        if network is not None and inputs is None:
            raise ValueError("a neural baseline needs its inputs")
        self.average_beta = average_beta
        self.network = network
        self.inputs = inputs
        self.sites = None if sites is None else frozenset(sites)

    def _pyro_sample(self, msg):
        if (
            not is_latent(msg)
            or (self.sites is not None and msg["name"] not in self.sites)
        ):
            return
        options = dict(msg["infer"].get("baseline", {}))
        if self.average_beta is not None:
            options.update(use_decaying_avg_baseline=True, baseline_beta=float(self.average_beta))
        if self.network is not None:
            net = self.network

            # Read the site's scale and (particle-broadcast) batch shape when Pyro builds the
            # baseline, i.e. after every enclosing plate has processed the site.
            def nn_baseline(inputs, _net=net, _msg=msg):
                out = _net(inputs)
                dim = _data_dim(_msg, out.shape[0])
                if dim is None:  # a global site: no per-point baseline, the average alone
                    shape = _downstream_shape(_msg["fn"].batch_shape)
                    return out.new_zeros(shape)
                out = (_msg["scale"] * out.reshape(out.shape + (1,) * (-1 - dim)))
                out = out.expand(_msg["fn"].batch_shape)
                return out.reshape(_downstream_shape(out.shape))

            options.update(nn_baseline=nn_baseline, nn_baseline_input=self.inputs)
        # A new dict: the guide's own ``infer`` dict (often a literal shared by every call) is
        # left untouched.
        msg["infer"] = {**msg["infer"], "baseline": options}


class AverageBaselineTraceGraph_ELBO(FastTraceGraph_ELBO):
    r"""Pyro's :class:`~pyro.infer.TraceGraph_ELBO` with decaying-average baselines of its own.

    The score-function gradient of a latent guide site :math:`z` with downstream cost
    :math:`c(z)` (the terms of :math:`\log p_\theta(x, z) - \log q_\phi(z \mid x)` that the site
    influences, Rao-Blackwellized with the dependency graph as in Pyro), minus a baseline, is

    .. math::

        \big(c(z) - b_t\big)\, \nabla_\phi \log q_\phi(z \mid x), \qquad
        b_t = \beta\, b_{t-1} + (1 - \beta)\, c_{t-1}, \quad b_1 = 0,

    per data-plate position, with :math:`c_{t-1}` the cost at the previous step. It stays
    unbiased because :math:`b_t` does not depend on the current :math:`z` and
    :math:`\mathbb{E}_q[\nabla_\phi \log q_\phi] = 0`; it has lower variance when :math:`b_t` is
    close to :math:`\mathbb{E}_q[c]` [1, 2]. The sites and :math:`\beta` are chosen by
    :class:`BaselineMessenger` (or :func:`score_function_guide`) on the guide; this class only
    keeps the averages :math:`b_t` in its own :attr:`averages` rather than in Pyro's global
    parameter store (``__baseline_avg_downstream_cost_<site>``), so two objectives or models in
    one process never share them. Around each particle's surrogate computation the averages are
    put into the store, where Pyro's ``_construct_baseline`` reads and updates them, and taken
    out again, restoring whatever was there before. An average whose shape no longer matches the
    site (a different batch size) restarts from zero, as a fresh one does in Pyro. With
    :attr:`frozen` set the averages are used but not updated. The loss value is
    :class:`~pyro.infer.TraceGraph_ELBO`'s. A
    :class:`~ppl_vae.infer.tracegraph_elbo.FastTraceGraph_ELBO`: without provenance tracking
    where every cost is the whole log-weight per data point (the same loss and gradients).

    :param int num_particles: samples per data point, averaged. Default 1.
    :param max_plate_nesting: bound on the number of nested :func:`pyro.plate` contexts.
        Default infinity: Pyro finds it from a first trace.
    :param bool vectorize_particles: draw the samples in one vectorized pass. Default False.
    :param kwargs: the other keyword arguments of
        :class:`~ppl_vae.infer.tracegraph_elbo.FastTraceGraph_ELBO` (``recheck_every``) and
        :class:`pyro.infer.TraceGraph_ELBO`.

    Example::

        import pyro, torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.infer import AverageBaselineTraceGraph_ELBO, score_function_guide
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        elbo = AverageBaselineTraceGraph_ELBO()
        with_baseline = score_function_guide(average_beta=0.9)(guide)
        svi = pyro.infer.SVI(model, with_baseline, pyro.optim.Adam({"lr": 1e-3}), elbo)
        loss = svi.step(torch.rand(8, 20).bernoulli())
        assert set(elbo.averages) == {"z"}  # the running average, kept by the instance

    **References**

    [1] R. J. Williams, *Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning*, Machine Learning 8, 1992.

    [2] A. Mnih, K. Gregor, *Neural Variational Inference and Learning in Belief Networks*,
    ICML 2014.
    """

    compilable = False  # the averages are state outside the loss and gradient


    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.averages: dict[str, torch.Tensor] = {}
        #: When True the averages are used but not updated (gradient measurements at fixed
        #: parameters: every draw then sees the same baseline, as the draws must be i.i.d.).
        self.frozen = False

    @contextmanager
    def _private_averages(self, guide_trace):
        store = pyro.get_param_store()
        names = [
            name
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample"
            and site["infer"].get("baseline", {}).get("use_decaying_avg_baseline")
        ]
        saved = {}
        for name in names:
            key = _AVG_PREFIX + name
            if key in store:
                saved[key] = store[key].detach()
                del store[key]
            own = self.averages.get(name)
            shape = _downstream_shape(guide_trace.nodes[name]["log_prob"].shape)
            if own is not None and own.shape == shape:
                store[key] = own
        try:
            yield
        finally:
            for name in names:
                key = _AVG_PREFIX + name
                if key in store:
                    if not (self.frozen and name in self.averages):
                        # without the provenance a tracked (stock) step leaves on it, which
                        # would send every later step's baseline arithmetic through Pyro's
                        # provenance tracking; the values are the same
                        self.averages[name] = detach_provenance(store[key]).detach()
                    del store[key]
                if key in saved:
                    store[key] = saved[key]

    # Pyro has no public hook for where the decaying averages live: its private
    # ``_construct_baseline`` reads and writes them in the global param store during this
    # per-particle step, so this is the narrowest place to swap the instance's own averages in.
    def _loss_and_surrogate_loss_particle(self, model_trace, guide_trace):
        with self._private_averages(guide_trace):
            return super()._loss_and_surrogate_loss_particle(model_trace, guide_trace)


def score_function_guide(average_beta=None, network=None):
    """``wrap_guide`` of the score-function objectives: the guide with reparameterization
    switched off (:class:`~ppl_vae.infer.no_reparam.NoReparamMessenger`) and, optionally, a
    decaying-average and/or neural baseline at every latent site (:class:`BaselineMessenger`).
    The neural baseline's input is the guide's data argument (first positional or ``x=``)."""

    def wrap_guide(guide):
        def guide_without_reparam(*args, **kwargs):
            fn = NoReparamMessenger()(guide)
            if average_beta is not None or network is not None:
                inputs = args[0] if args else kwargs.get("x")
                fn = BaselineMessenger(average_beta=average_beta, network=network,
                                       inputs=inputs)(fn)
            return fn(*args, **kwargs)

        return guide_without_reparam

    return wrap_guide
