"""Pyro's ``TraceGraph_ELBO`` without provenance tracking where it cannot change the result.

Pyro's :class:`~pyro.infer.TraceGraph_ELBO` finds the downstream cost of each
non-reparameterized site by *provenance tracking* (:mod:`pyro.ops.provenance`): every sampled
value is wrapped in a tensor subclass whose ``__torch_function__`` runs in Python for every
operation the model and guide apply to it (about 120 per step through an MLP decoder), which
makes a score-function step 1.6-1.8x slower than a hand-written one on a CPU
(``benchmarks/speed.py --only objectives``). :class:`FastTraceGraph_ELBO` computes the same loss
and surrogate without that tracking whenever the tracking could only have found what the plates
already say.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import torch
from pyro import poutine
from pyro.distributions.util import is_identically_zero
from pyro.infer import TraceGraph_ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.tracegraph_elbo import _compute_elbo, _construct_baseline
from pyro.infer.util import MultiFrameTensor, is_validation_enabled
from pyro.ops.provenance import detach_provenance, get_provenance
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.util import check_if_enumerated

__all__ = ["FastTraceGraph_ELBO"]


class _NewValueObjects(Messenger):
    """Give every value that :class:`~pyro.infer.tracegraph_elbo.TrackNonReparam` would wrap
    (latent, non-reparameterized, not a subsample site) a new tensor object (an alias of the
    same data, ``view_as``), as that wrapping does. Distributions that cache by object identity
    depend on it: a ``TransformedDistribution`` whose transforms cache their last ``(x, y)``
    (Pyro's IAF) would otherwise score its own sample with the cached, detached ``x`` and miss
    the dependence of ``x = f^{-1}(y)`` on the parameters, a wrong score function."""

    def _pyro_post_sample(self, msg):
        if (not msg["is_observed"] and not isinstance(msg["fn"], _Subsample)
                and not getattr(msg["fn"], "has_rsample", False)
                and torch.is_tensor(msg["value"])):
            msg["value"] = msg["value"].view_as(msg["value"])


def _sample_sites(trace):
    return [(name, site) for name, site in trace.nodes.items() if site["type"] == "sample"]


def _frames(site):
    return tuple((f.name, f.dim, f.vectorized) for f in site["cond_indep_stack"])


def _signature(model_trace, guide_trace):
    """What the provenance verdict is cached under: the sample sites of both traces in order,
    each with whether it is observed / reparameterized and its plates (names, dims; not sizes,
    so a smaller last batch has the same signature)."""
    return (
        tuple((n, s["is_observed"], _frames(s)) for n, s in _sample_sites(model_trace)),
        tuple((n, bool(getattr(s["fn"], "has_rsample", False)), _frames(s))
              for n, s in _sample_sites(guide_trace)),
    )


def _whole_weight_provenance(model_trace, guide_trace):
    """The provenance every site's cost has, if the provenance-tracked traces have the *whole
    log-weight per data point* structure, else None.

    That structure: every sample site of model and guide (observed ones included) depends on
    every non-reparameterized guide site (all log-densities carry the same provenance R), and
    every site in R is in a vectorized plate that every observed site is in too (local to the
    data plate). Then the downstream cost of each site in R is the whole log-weight summed to
    its plates, which needs no tracking to compute. An empty R (no non-reparameterized site)
    also qualifies: there are no score terms."""
    sites = _sample_sites(model_trace) + _sample_sites(guide_trace)
    provenances = [get_provenance(s["log_prob_sum"]) for _, s in sites]
    whole = frozenset().union(*provenances)
    if any(p != whole for p in provenances):
        return None
    observed = [s for _, s in _sample_sites(model_trace) if s["is_observed"]]
    for name in whole:
        site = guide_trace.nodes.get(name)
        if site is None or site["type"] != "sample":
            return None
        data_frames = [f for f in site["cond_indep_stack"] if f.vectorized
                       and all(f in o["cond_indep_stack"] for o in observed)]
        if not observed or not data_frames:
            return None
    # the provenance object of the first site: its iteration order is the order in which the
    # stock computation first meets the sites, hence the order of its sum of score terms
    return provenances[0]


def _compute_elbo_whole(model_trace, guide_trace, provenance):
    """Pyro's ``pyro.infer.tracegraph_elbo._compute_elbo`` (pyro-ppl 1.9, Apache-2.0) with the
    provenance of every site's ``log_prob_sum`` known to be ``provenance``: the same
    operations in the same order, hence the same tensors."""
    elbo = 0.0
    surrogate_elbo = 0.0
    baseline_loss = 0.0
    downstream_costs = defaultdict(lambda: MultiFrameTensor())
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            elbo += site["log_prob_sum"]
            surrogate_elbo += site["log_prob_sum"]
            for key in provenance:
                downstream_costs[key].add((site["cond_indep_stack"], site["log_prob"]))
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            elbo -= site["log_prob_sum"]
            entropy_term = site["score_parts"].entropy_term
            if not is_identically_zero(entropy_term):
                surrogate_elbo -= entropy_term.sum()
            for key in provenance:
                downstream_costs[key].add((site["cond_indep_stack"], -site["log_prob"]))
    for node, downstream_cost in downstream_costs.items():
        guide_site = guide_trace.nodes[node]
        downstream_cost = downstream_cost.sum_to(guide_site["cond_indep_stack"])
        score_function = guide_site["score_parts"].score_function
        use_baseline, baseline_loss_term, baseline = _construct_baseline(
            node, guide_site, downstream_cost)
        if use_baseline:
            downstream_cost = downstream_cost - baseline
            baseline_loss = baseline_loss + baseline_loss_term
        surrogate_elbo += (score_function * downstream_cost.detach()).sum()
    surrogate_loss = -surrogate_elbo + baseline_loss
    return detach_provenance(elbo), detach_provenance(surrogate_loss)


class FastTraceGraph_ELBO(TraceGraph_ELBO):
    r"""Pyro's :class:`~pyro.infer.TraceGraph_ELBO` [1] — same loss, same surrogate, same
    gradients, same random draws — that skips provenance tracking [2] where it cannot change
    the result.

    For a non-reparameterized guide site :math:`z` the stock class forms the score term
    :math:`\big(c_z - b_z\big)\, \nabla_\phi \log q_\phi(z \mid \cdot)` with the downstream
    cost

    .. math::

        c_z = \sum_{s\,:\, z \in \mathrm{prov}(s)} \Big[ \log p(s) \Big]_{\text{summed to the
        plates of } z} - \sum_{s\,:\, z \in \mathrm{prov}(s)} \Big[ \log q(s) \Big]_{\dots},

    where :math:`\mathrm{prov}(s)`, the non-reparameterized sites the log-density of site
    :math:`s` was computed from, is found by running every tensor operation of model and guide
    through a Python ``__torch_function__``. When every site's provenance is the set
    :math:`R` of *all* non-reparameterized sites, and each of them lies in a plate that every
    observed site is in (the data plate), :math:`c_z` is the whole log-weight
    :math:`\log p(x, z) - \log q(z \mid x)` per data point, which the plates alone give: this
    class then runs model and guide untracked and computes the stock surrogate with
    :math:`\mathrm{prov}(s) = R` (the same tensor operations in the same order, so the loss
    and gradients are bitwise those of the stock class). That is the structure of every
    shipped model/guide pair with one stochastic layer (the sigmoid belief network, the VAE
    under ``score``); two-layer pairs, where the top layer's cost is Rao-Blackwellized, keep the
    stock path.

    Which case a call is in is decided from its trace *structure* (the sample sites, whether
    each is observed or reparameterized, their plates): the first call with a structure, and
    every ``recheck_every``-th call, runs the stock (tracked) computation and records whether
    the provenance had the whole-log-weight form; later calls with a structure recorded so are
    untracked. A structure not yet seen is traced again with tracking, replaying the same
    draws. A structure once found not to have that form stays on the stock path; if a recheck
    contradicts a recorded verdict (a model whose data flow between sites changes with the
    values while its sites stay the same), a warning is given and the structure stays on the
    stock path from then on. Where the assumption fails between rechecks the estimate is the
    un-Rao-Blackwellized score function, still unbiased: a term that does not depend on
    :math:`z` has mean zero against :math:`\nabla_\phi \log q_\phi(z)` and plates keep other
    data points out. ``loss`` (no gradient) never needs provenance and is always untracked.

    :param int num_particles: samples per data point, averaged. Default 1.
    :param max_plate_nesting: bound on the number of nested :func:`pyro.plate` contexts.
        Default infinity: Pyro finds it from a first trace.
    :param bool vectorize_particles: draw the samples in one vectorized pass. Default False.
    :param int recheck_every: run the tracked computation every this many calls to check the
        recorded verdicts (0: never after the first). Default 100.
    :param kwargs: the other keyword arguments of :class:`pyro.infer.TraceGraph_ELBO`.

    **References**

    [1] J. Schulman, N. Heess, T. Weber, P. Abbeel, *Gradient Estimation Using Stochastic
    Computation Graphs*, NeurIPS 2015.

    [2] D. Wingate, N. Goodman, A. Stuhlmüller, J. Siskind, *Nonstandard Interpretations of
    Probabilistic Programs for Efficient Inference*, NeurIPS 2011.

    Example::

        import torch
        from ppl_vae.guides import BernoulliGuide
        from ppl_vae.infer.tracegraph_elbo import FastTraceGraph_ELBO
        from ppl_vae.models import SigmoidBeliefNetwork

        model, guide = SigmoidBeliefNetwork(20, 4), BernoulliGuide(20, 4)
        x = torch.rand(8, 20).bernoulli()
        elbo = FastTraceGraph_ELBO()
        loss = elbo.loss_and_grads(model, guide, x)  # tracked: the first call of a structure
        loss = elbo.loss_and_grads(model, guide, x)  # untracked, the same as TraceGraph_ELBO
        assert elbo.untracked_calls == 1
    """

    def __init__(self, num_particles=1, max_plate_nesting=float("inf"), *,
                 vectorize_particles=False, recheck_every=100, **kwargs):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=vectorize_particles, **kwargs)
        self.recheck_every = int(recheck_every)
        #: structure signature -> the provenance of every site (whole-log-weight form), or None
        self.verdicts: dict = {}
        self._fast = set()  # structures whose verdict a recheck contradicted are removed
        self._calls = 0
        self._last = None
        self._loss_only = False
        #: calls answered without provenance tracking (for tests and benchmarks)
        self.untracked_calls = 0

    # --- traces -----------------------------------------------------------------------------

    def _untracked_trace(self, model, guide, args, kwargs):
        with _NewValueObjects():
            model_trace, guide_trace = get_importance_trace(
                "dense", self.max_plate_nesting, model, guide, args, kwargs)
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    def _get_trace(self, model, guide, args, kwargs):
        if self._loss_only:
            return self._untracked_trace(model, guide, args, kwargs)
        self._calls += 1
        recheck = self.recheck_every > 0 and self._calls % self.recheck_every == 0
        if self._last in self._fast and not recheck:
            model_trace, guide_trace = self._untracked_trace(model, guide, args, kwargs)
            sig = _signature(model_trace, guide_trace)
            if sig in self._fast:
                guide_trace._ppl_vae_provenance = self.verdicts[sig]
                self.untracked_calls += 1
                self._last = sig
                return model_trace, guide_trace
            # a new structure: the same draws again, tracked
            guide = poutine.replay(guide, trace=guide_trace)
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        sig = _signature(model_trace, guide_trace)
        provenance = _whole_weight_provenance(model_trace, guide_trace)
        if sig not in self.verdicts:
            self.verdicts[sig] = provenance
            if provenance is not None:
                self._fast.add(sig)
        elif self.verdicts[sig] != provenance and sig in self._fast:
            warnings.warn(
                "FastTraceGraph_ELBO: the data flow between sample sites changed for the same "
                "trace structure; provenance is tracked on every call from now on",
                RuntimeWarning, stacklevel=2)
            self._fast.discard(sig)
        self._last = sig
        return model_trace, guide_trace

    def _loss_and_surrogate_loss_particle(self, model_trace, guide_trace):
        provenance = getattr(guide_trace, "_ppl_vae_provenance", None)
        if provenance is None:
            return _compute_elbo(model_trace, guide_trace)
        return _compute_elbo_whole(model_trace, guide_trace, provenance)

    def loss(self, model, guide, *args, **kwargs):
        """The stock :meth:`~pyro.infer.TraceGraph_ELBO.loss` (an estimate of -ELBO, a float)
        on untracked traces: the loss needs no provenance."""
        self._loss_only = True
        try:
            return super().loss(model, guide, *args, **kwargs)
        finally:
            self._loss_only = False
