"""FastTraceGraph_ELBO (the score-function objectives' ELBO) against Pyro's stock TraceGraph_ELBO:
the same loss and bitwise the same gradients, in float64, for every shipped model/guide pair
under ``score``, ``score-avg``, ``score-nn`` and ``tracegraph`` — untracked where the shortcut
applies (one stochastic layer), tracked where it must not (Rao-Blackwellized costs)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.enum import get_importance_trace
from pyro.infer.tracegraph_elbo import TrackNonReparam, _compute_elbo
from torch import nn

from ppl_vae.infer.objectives import make_objective
from ppl_vae.infer.tracegraph_elbo import (
    FastTraceGraph_ELBO,
    _compute_elbo_whole,
    _whole_weight_provenance,
)
from ppl_vae.training.builders import build_model_and_guide
from ppl_vae.training.config import TrainConfig

D = 12
OBJECTIVES = ["score", "score-avg", "score-nn", "tracegraph"]
# (id, TrainConfig options, shortcut applies under score/score-avg/score-nn, under tracegraph)
PAIRS = [
    ("vae", dict(model="vae", latent_dims=(3,), hidden=(8,)), True, True),
    ("vae-gaussian", dict(model="vae", latent_dims=(3,), hidden=(8,), likelihood="gaussian"),
     True, True),
    # IAF: log q through Pyro's cached transform (see tracegraph_elbo._NewValueObjects)
    ("vae-iaf", dict(model="vae", guide="iaf", latent_dims=(3,), hidden=(8,), flow_depth=1),
     True, True),
    ("sbn", dict(model="sbn", latent_dims=(4,), hidden=(6,)), True, True),
    ("sbn-deep", dict(model="sbn", latent_dims=(4,), hidden=(8, 6)), True, True),
    # two stochastic layers: the top layer's cost excludes p(x | z1) (Rao-Blackwellized);
    # under tracegraph the Gaussian guide is reparameterized: no score term, nothing to track
    ("vae-2layer-bottom-up", dict(model="vae", latent_dims=(3, 2), hidden=(8,)), False, True),
    ("vae-2layer-top-down", dict(model="vae", guide="top-down", latent_dims=(3, 2),
                                 hidden=(8,)), False, True),
    # the improper flat prior's log-density (0) does not depend on z: not every cost does
    ("ae", dict(model="ae", latent_dims=(3,), hidden=(8,)), False, False),
    ("dae", dict(model="dae", latent_dims=(3,), hidden=(8,)), False, False),
]


@pytest.fixture(autouse=True)
def float64():
    """Every tensor in float64 (some guides create constants in the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


X = torch.rand(6, D, generator=torch.Generator().manual_seed(0)).bernoulli().double()


def _grads(params):
    out = [None if p.grad is None else p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out


def _assert_same(a, b, what):
    assert len(a) == len(b)
    for i, (ga, gb) in enumerate(zip(a, b)):
        assert (ga is None) == (gb is None), (what, i)
        if ga is not None:
            assert torch.equal(ga, gb), (what, i, (ga - gb).abs().max())


def _compare(model, guide, objective, stock, x, steps=4, **kwargs):
    """``steps`` calls of each, the same seed per call: identical losses and gradients."""
    params = [*model.parameters(), *guide.parameters(),
              *(p for m in objective.modules.values() for p in m.parameters())]
    stock_guide = objective.wrap_guide(guide)
    for step in range(steps):
        pyro.set_rng_seed(step)
        loss = objective.loss_and_grads(model, guide, x, **kwargs)
        ours = _grads(params)
        pyro.set_rng_seed(step)
        ref = stock.loss_and_grads(model, stock_guide, x, **kwargs)
        theirs = _grads(params)
        assert loss == ref, (step, loss, ref)
        _assert_same(ours, theirs, f"step {step}")
        assert any(g is not None for g in ours)
        pyro.set_rng_seed(100 + step)
        a = objective.loss(model, guide, x, **kwargs)
        pyro.set_rng_seed(100 + step)
        assert a == stock.loss(model, stock_guide, x, **kwargs)


@pytest.mark.parametrize("name", OBJECTIVES)
@pytest.mark.parametrize("pair_id, options, applies, applies_tracegraph", PAIRS,
                         ids=[p[0] for p in PAIRS])
def test_loss_and_gradients_are_the_stock_ones(pair_id, options, applies, applies_tracegraph,
                                               name):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = build_model_and_guide(TrainConfig(**options), D)
    model.double(), guide.double()
    objective = make_objective(name, x_dim=D)
    for module in objective.modules.values():
        module.double()
    assert isinstance(objective.elbo, FastTraceGraph_ELBO)
    _compare(model, guide, objective, pyro.infer.TraceGraph_ELBO(), X, num_data=30)
    expected = 3 if (applies_tracegraph if name == "tracegraph" else applies) else 0
    assert objective.elbo.untracked_calls == expected, objective.elbo.verdicts


@pytest.mark.parametrize("name", OBJECTIVES)
def test_vectorized_particles_are_the_stock_ones(name):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = build_model_and_guide(TrainConfig(model="sbn", latent_dims=(4,),
                                                     hidden=(8,)), D)
    model.double(), guide.double()
    objective = make_objective(name, num_particles=3, x_dim=D)
    for module in objective.modules.values():
        module.double()
    stock = pyro.infer.TraceGraph_ELBO(num_particles=3, vectorize_particles=True)
    _compare(model, guide, objective, stock, X)
    assert objective.elbo.untracked_calls == 3


class TwoObservations(nn.Module):
    """z -> x, and a second observed site y that does not depend on z: its cost is not in z's
    downstream cost (provenance), so the whole-log-weight shortcut must not apply."""

    def __init__(self):
        super().__init__()
        self.dec = nn.Linear(3, D).double()
        self.b = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x, y):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=torch.zeros(3, dtype=x.dtype)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)
            pyro.sample("y", dist.Bernoulli(logits=self.b).to_event(1), obs=y)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(D, 3).double()

    def forward(self, x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=self.enc(x)).to_event(1))


def test_the_shortcut_does_not_apply_where_it_would_change_the_gradient():
    model, guide = TwoObservations(), Encoder()
    y = torch.ones(6, 2, dtype=torch.float64)
    objective = make_objective("score-avg")
    stock = pyro.infer.TraceGraph_ELBO()
    _compare(model, guide, objective, stock, X, y=y)
    assert objective.elbo.untracked_calls == 0
    assert list(objective.elbo.verdicts.values()) == [None]
    # ... and applying it would have changed the surrogate: y's cost would enter z's
    pyro.set_rng_seed(0)
    with TrackNonReparam():
        mt, gt = get_importance_trace("dense", 1, model, guide, (X,), {"y": y})
    assert _whole_weight_provenance(mt, gt) is None
    _, stock_surrogate = _compute_elbo(mt, gt)
    _, whole = _compute_elbo_whole(mt, gt, frozenset({"z"}))
    # the values agree (the score term is detached), the gradients do not
    g_stock = torch.autograd.grad(stock_surrogate, guide.enc.weight, retain_graph=True)[0]
    g_whole = torch.autograd.grad(whole, guide.enc.weight)[0]
    assert not torch.allclose(g_stock, g_whole)


def test_a_global_non_reparameterized_site_keeps_the_stock_path():
    def model(x):
        s = pyro.sample("s", dist.Bernoulli(torch.tensor(0.5, dtype=x.dtype)))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Bernoulli(logits=s + torch.zeros(D, dtype=x.dtype))
                        .to_event(1), obs=x)

    p = nn.Parameter(torch.tensor(0.2, dtype=torch.float64))

    def guide(x):
        pyro.sample("s", dist.Bernoulli(logits=p))

    elbo = FastTraceGraph_ELBO()
    for step in range(3):
        pyro.set_rng_seed(step)
        elbo.loss_and_grads(model, guide, X)
    assert elbo.untracked_calls == 0  # s is not local to the data plate


def test_a_recheck_that_contradicts_the_verdict_warns_and_falls_back():
    uses_z = [True]
    dec = nn.Linear(3, D).double()
    enc = nn.Linear(D, 3).double()

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=torch.zeros(3, dtype=x.dtype)).to_event(1))
            h = dec(z) if uses_z[0] else dec.bias.expand(x.shape[0], D)
            pyro.sample("x", dist.Bernoulli(logits=h).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=enc(x)).to_event(1))

    elbo = FastTraceGraph_ELBO(recheck_every=3)
    elbo.loss_and_grads(model, guide, X)  # tracked: the whole-weight form
    elbo.loss_and_grads(model, guide, X)  # untracked
    assert elbo.untracked_calls == 1
    uses_z[0] = False  # same sites, x no longer depends on z
    with pytest.warns(RuntimeWarning, match="data flow"):
        elbo.loss_and_grads(model, guide, X)  # the recheck
    for _ in range(4):
        elbo.loss_and_grads(model, guide, X)
    assert elbo.untracked_calls == 1


def test_a_new_structure_is_retraced_with_the_same_draws():
    """After a whole-weight structure, a call whose trace has another structure (a smaller
    batch has the same one; an extra site does not) is traced again, tracked, on the same
    draws: the result is still the stock one."""
    torch.manual_seed(0)
    model, guide = build_model_and_guide(TrainConfig(model="sbn", latent_dims=(4,), hidden=(6,)),
                                         D)
    model.double(), guide.double()
    objective = make_objective("score")
    stock = pyro.infer.TraceGraph_ELBO()
    _compare(model, guide, objective, stock, X, steps=2)
    assert objective.elbo.untracked_calls == 1
    _compare(model, guide, objective, stock, X[:4], steps=2)  # smaller batch: same structure
    assert objective.elbo.untracked_calls == 3

    def extended(x):
        model(x)
        with pyro.plate("extra", 2):
            pyro.sample("w", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0), obs=x[:2, 0])

    params = [*model.parameters(), *guide.parameters()]
    pyro.set_rng_seed(7)
    loss = objective.loss_and_grads(extended, guide, X)
    ours = _grads(params)
    pyro.set_rng_seed(7)
    assert loss == stock.loss_and_grads(extended, objective.wrap_guide(guide), X)
    _assert_same(ours, _grads(params), "new structure")
    assert objective.elbo.untracked_calls == 3
