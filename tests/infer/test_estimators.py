"""Gradient estimators against closed forms (in the spirit of Pyro's tests/infer/test_gradient.py).

Model and guide (J = 2 latents, D = 3 observations, N = 4 data points):

    p(z) = N(0, I),   p(x | z) = N(W z + b, sigma^2 I)          (theta = W, b)
    q(z | x) = N(m, S),  m = A x + c,  S = diag(exp(2 l))        (phi = A, c, l)

The ELBO is then known in closed form; with r = x - W m - b, per data point

    ELBO = -D/2 log(2 pi sigma^2) - (|r|^2 + tr(W S W^T)) / (2 sigma^2)
           - (|m|^2 + tr S) / 2 + sum_j l_j + J/2,

and its exact gradient (hand-derived, summed over the N points):

    dW = sum_n r_n m_n^T / sigma^2 - N W S / sigma^2        db = sum_n r_n / sigma^2
    g_n = W^T r_n / sigma^2 - m_n;  dA = sum_n g_n x_n^T     dc = sum_n g_n
    dl_j = N (1 - S_jj - (W^T W)_jj S_jj / sigma^2).

Every estimator that is unbiased for the ELBO gradient must match it coordinate by coordinate
within 4 standard errors of its own mean, the standard error being estimated from its G draws
(each draw averages P vectorized particles): by the central limit theorem the z-score is close to
N(0, 1) and P(|z| > 4) = 6e-5 per coordinate, about 1% over all ~200 checks here; the seeds are
fixed, so the outcome is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

import ppl_vae
from ppl_vae.analysis.gradient_variance import gradient_statistics
from ppl_vae.infer.objectives import available_objectives, make_objective
from ppl_vae.poutine.plates import data_plate

SIGMA = 0.7
N, D, J = 4, 3, 2


class LinearGaussianModel(PyroModule):
    def __init__(self):
        super().__init__()
        # Orthogonal columns: W^T W is diagonal, so the exact posterior is a diagonal Gaussian
        # with mean linear in x, i.e. inside the guide family (used by the STL/DReG tests).
        self.W = nn.Parameter(torch.tensor([[1.0, 0.5], [-1.0, 1.0], [0.5, 1.0]]) * 0.8)
        self.b = nn.Parameter(torch.tensor([0.3, -0.2, 0.1]))

    def forward(self, x, num_data=None):
        with data_plate(x.shape[0], num_data):
            z = pyro.sample("z", dist.Normal(torch.zeros(J), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, SIGMA).to_event(1), obs=x)


class LinearGaussianGuide(PyroModule):
    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[0.2, -0.1, 0.3], [0.1, 0.2, -0.2]]))
        self.c = nn.Parameter(torch.tensor([0.1, -0.3]))
        self.log_s = nn.Parameter(torch.tensor([-0.5, -0.8]))

    def forward(self, x, num_data=None):
        with data_plate(x.shape[0], num_data):
            pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.log_s.exp()).to_event(1))


X = torch.tensor([[0.5, -1.0, 1.5], [1.0, 0.2, -0.3], [-0.7, 0.4, 0.9], [0.0, 1.1, -1.2]])


def _pair(exact_posterior=False):
    model, guide = LinearGaussianModel(), LinearGaussianGuide()
    if exact_posterior:
        with torch.no_grad():
            W, b = model.W, model.b
            cov = torch.linalg.inv(torch.eye(J) + W.T @ W / SIGMA**2)
            assert torch.allclose(cov, torch.diag(torch.diag(cov)))
            guide.A.copy_(cov @ W.T / SIGMA**2)
            guide.c.copy_(-cov @ W.T @ b / SIGMA**2)
            guide.log_s.copy_(0.5 * torch.log(torch.diag(cov)))
    return model, guide


def closed_form_elbo(model, guide, x):
    W, b, A, c, log_s = model.W, model.b, guide.A, guide.c, guide.log_s
    m = x @ A.T + c
    S = torch.exp(2 * log_s)
    r = x - m @ W.T - b
    n = x.shape[0]
    return (
        -n * D / 2 * math.log(2 * math.pi * SIGMA**2)
        - ((r**2).sum() + n * (W**2 * S).sum()) / (2 * SIGMA**2)
        - ((m**2).sum() + n * S.sum()) / 2
        + n * log_s.sum()
        + n * J / 2
    )


def exact_gradient(model, guide, x):
    """The hand-derived gradient of the summed ELBO, as {"decoder": [dW, db], "encoder": [...]}"""
    with torch.no_grad():
        W, b, A, c, log_s = model.W, model.b, guide.A, guide.c, guide.log_s
        m = x @ A.T + c
        S = torch.exp(2 * log_s)
        r = x - m @ W.T - b
        n = x.shape[0]
        dW = r.T @ m / SIGMA**2 - n * W * S / SIGMA**2
        db = r.sum(0) / SIGMA**2
        g = r @ W / SIGMA**2 - m
        dA = g.T @ x
        dc = g.sum(0)
        dl = n * (1 - S - (W**2).sum(0) * S / SIGMA**2)
    return {"decoder": [dW, db], "encoder": [dA, dc, dl]}


def _flat(groups):
    return {k: torch.cat([t.reshape(-1) for t in v]).double().numpy() for k, v in groups.items()}


def test_closed_form_elbo_matches_monte_carlo_and_hand_gradient():
    model, guide = _pair()
    elbo = closed_form_elbo(model, guide, X)
    pyro.set_rng_seed(0)
    mc = -make_objective("reparam", num_particles=20000).loss(model, guide, X)
    assert abs(mc - float(elbo.detach())) < 0.05  # MC standard error here is ~0.01
    grads = torch.autograd.grad(elbo, [model.W, model.b, guide.A, guide.c, guide.log_s])
    auto = _flat({"decoder": grads[:2], "encoder": grads[2:]})
    hand = _flat(exact_gradient(model, guide, X))
    for group in ("decoder", "encoder"):
        np.testing.assert_allclose(auto[group], hand[group], rtol=1e-5, atol=1e-5)


# Estimators unbiased for the gradient of the ELBO: (name, draws G, particles per draw P).
# (The objective-by-objective grid below calls loss_and_grads directly; these go through
# gradient_statistics, with its baseline warm-up, and through the aliases.)
UNBIASED = [
    ("reparam", 60, 20),
    ("analytic-kl", 60, 20),
    ("score-nn", 150, 100),
]


@pytest.fixture(scope="module")
def unbiased_stats():
    model, guide = _pair()
    out = {}
    for name, draws, particles in UNBIASED:
        pyro.set_rng_seed(0)
        out[name] = gradient_statistics(
            model, guide, X, [name], draws=draws, num_particles=particles, seed=1,
            keep_vectors=True, reference=name, warmup=100,
        )[name]
    return out


@pytest.mark.parametrize("name", [u[0] for u in UNBIASED])
def test_gradient_statistics_mean_matches_exact_gradient(unbiased_stats, name):
    stats = unbiased_stats[name]
    exact = _flat(exact_gradient(*_pair(), X))
    for group in ("decoder", "encoder"):
        mean, var = stats["mean"][group], stats["variance"][group]
        se = np.sqrt(var / stats["draws"])
        err = np.abs(mean - exact[group])
        tol = 4 * se + 1e-6 * (1 + np.abs(exact[group]))
        assert (err <= tol).all(), (
            f"{name} {group}: |mean - exact| / se = {np.round(err / np.maximum(se, 1e-12), 2)}"
        )


# Pyro's grid style (tests/infer/test_gradient.py): every ELBO-unbiased objective, with and
# without subsampling (num_data = 3N: the data plate scales the minibatch by 3, so the expected
# gradient is 3x the summed one) and with particles vectorized or in a Python loop, each calling
# the objective's own loss_and_grads: (name, draws G, particles K).
# Looped particles cost one trace each, so the loop runs use at most 3.
GRID = [("trace", 40, 6), ("meanfield", 40, 6), ("tracegraph", 40, 6), ("score", 60, 30),
        ("score-avg", 60, 30), ("score-nn", 60, 30), ("stl", 40, 6), ("iwae-1", 60, 1),
        ("dreg-1", 60, 1)]


@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "loop"])
@pytest.mark.parametrize("num_data", [None, 3 * N], ids=["full", "subsampled"])
@pytest.mark.parametrize("name, draws, particles", GRID, ids=[g[0] for g in GRID])
def test_loss_and_grads_grid_matches_exact_gradient(name, draws, particles, num_data, vectorize):
    model, guide = _pair()
    params = [model.W, model.b, guide.A, guide.c, guide.log_s]
    particles = particles if vectorize else min(particles, 3)
    objective = make_objective(name, num_particles=particles, vectorize_particles=vectorize,
                               x_dim=D)
    assert objective.elbo.vectorize_particles == (vectorize and particles > 1)
    kwargs = {} if num_data is None else {"num_data": num_data}
    pyro.set_rng_seed(11)
    draws_ = []
    for _ in range(draws):
        for p in params:
            p.grad = None
        objective.loss_and_grads(model, guide, X, **kwargs)
        draws_.append(-torch.cat([p.grad.reshape(-1) for p in params]).double())
    g = torch.stack(draws_).numpy()
    scale = 1.0 if num_data is None else num_data / N
    ex = exact_gradient(model, guide, X)
    exact = scale * np.concatenate([_flat(ex)["decoder"], _flat(ex)["encoder"]])
    se = g.std(0, ddof=1) / np.sqrt(draws)
    err = np.abs(g.mean(0) - exact)
    assert (err <= 4.5 * se + 1e-6 * (1 + np.abs(exact))).all(), np.round(err / se, 2)


@pytest.fixture(scope="module")
def score_family_stats():
    model, guide = _pair()
    return gradient_statistics(model, guide, X, ["reparam", "score", "score-avg", "score-nn"],
                               draws=150, seed=2, warmup=200)


def test_score_variance_exceeds_reparam_variance(score_family_stats):
    stats = score_family_stats
    assert stats["score"]["variance_encoder"] > 10 * stats["reparam"]["variance_encoder"]
    # The decoder gradient is grad_theta log p(x, z) with z ~ q for both: same distribution.
    ratio = stats["score"]["variance_decoder"] / stats["reparam"]["variance_decoder"]
    assert 0.6 < ratio < 1.6


@pytest.mark.parametrize("baseline", ["score-avg", "score-nn"])
def test_each_baseline_lowers_the_score_variance(score_family_stats, baseline):
    stats = score_family_stats
    assert stats[baseline]["variance_encoder"] < 0.5 * stats["score"]["variance_encoder"]
    assert stats[baseline]["snr_median_encoder"] > stats["score"]["snr_median_encoder"]


@pytest.mark.parametrize("name", ["stl", "dreg-4"])
def test_path_derivative_estimators_stick_the_landing(name):
    """With q(z|x) = p(z|x) the path derivative of log p(x,z) - log q(z|x) vanishes for every z:
    STL and DReG guide gradients are exactly zero (Roeder et al. 2017; Tucker et al. 2018)."""
    model, guide = _pair(exact_posterior=True)
    stats = gradient_statistics(model, guide, X, [name, "reparam"], draws=20, seed=4,
                                keep_vectors=True)
    assert stats[name]["variance_encoder"] < 1e-8
    assert np.abs(stats[name]["mean"]["encoder"]).max() < 1e-4
    assert stats["reparam"]["variance_encoder"] > 1e-2  # the ordinary gradient is noisy there


def test_iwae_dreg_and_rws_agree_on_the_iwae_gradient():
    """iwae-K and dreg-K both estimate grad L_K without bias (all parameters); rws-K's
    wake-theta is the same estimator of the decoder gradient."""
    model, guide = _pair()
    names = ["iwae-4", "dreg-4", "rws-4"]
    stats = gradient_statistics(model, guide, X, names, draws=200, seed=5, keep_vectors=True)
    ref = stats["iwae-4"]
    for name, groups in (("dreg-4", ("decoder", "encoder")), ("rws-4", ("decoder",))):
        for group in groups:
            diff = np.abs(stats[name]["mean"][group] - ref["mean"][group])
            se = np.sqrt((stats[name]["variance"][group] + ref["variance"][group]) / 200)
            assert (diff <= 4 * se + 1e-6).all(), f"{name} {group}: {diff / se}"
    # DReG lowers the variance of the guide gradient (Tucker et al. 2018, fig. 1).
    assert stats["dreg-4"]["variance_encoder"] < ref["variance_encoder"]


def test_iwae_bound_is_scaled_outside_the_log_mean_exp():
    model, guide = _pair()
    for name in ("iwae-5", "dreg-5", "rws-5"):
        pyro.set_rng_seed(0)
        full = make_objective(name).loss(model, guide, X)
        pyro.set_rng_seed(0)
        scaled = make_objective(name).loss(model, guide, X, num_data=10 * N)
        assert scaled == pytest.approx(10 * full, rel=1e-5), name


def test_registry_names_aliases_and_flags():
    from ppl_vae.infer.objectives import comparison_objectives, objective_spec

    assert available_objectives() == ["trace", "meanfield", "tracegraph", "enum", "score",
                                      "score-avg", "score-nn", "iwae", "rws", "stl", "dreg", "ws",
                                      "score-loo", "vimco", "arm", "disarm", "gumbel",
                                      "gumbel-st", "rebar", "relax"]
    # an alias is the same objective, with the same capability flags
    assert objective_spec("reparam") is objective_spec("trace")
    assert objective_spec("analytic-kl") is objective_spec("meanfield")
    discrete = [n for n in available_objectives() if objective_spec(n).can_infer_discrete]
    assert discrete == ["trace", "tracegraph", "enum", "score", "score-avg", "score-nn", "rws",
                        "stl", "ws", "score-loo", "vimco", "arm", "disarm", "gumbel", "gumbel-st",
                        "rebar", "relax"]
    assert comparison_objectives(5) == ["trace", "meanfield", "score", "score-avg", "score-nn",
                                        "iwae-5", "rws-5", "stl", "dreg-5"]
    assert make_objective("rws").elbo.num_particles == 5
    assert make_objective("rws-3").elbo.num_particles == 3
    assert make_objective("dreg-7").elbo.num_particles == 7
    assert make_objective("stl", num_particles=4).elbo.num_particles == 4


@pytest.mark.parametrize("name, options, message", [
    ("score-avg", {"baseline_beta": 1.0}, "baseline_beta"),
    ("score-avg", {"baseline_betta": 0.5}, "takes no option 'baseline_betta'"),
    ("trace", {"baseline_beta": 0.5}, "takes no option 'baseline_beta'"),
    ("rws-1", {}, "at least 2 particles"),
    ("rws", {"num_particles": 1}, "at least 2 particles"),
    ("iwae-5", {"num_particles": 3}, "fixes K=5"),
    ("iwae-0", {}, "at least 1 particles"),
    ("stl-3", {}, "unknown objective"),
])
def test_factories_refuse_unknown_and_impossible_options(name, options, message):
    with pytest.raises(ppl_vae.ConfigError, match=message):
        make_objective(name, **options)


def test_score_objectives_own_their_baseline_state():
    """The decaying average lives in the objective, not in Pyro's global param store, and the
    neural baseline is an objective module that SVI trains."""
    model, guide = _pair()
    svi = ppl_vae.SVI(model, guide, make_objective("score-nn", x_dim=D), lr=1e-2)
    before = [p.detach().clone() for p in svi.objective.modules["baseline"].parameters()]
    for _ in range(3):
        svi.step(X)
    assert not any(k.startswith("__baseline") for k in pyro.get_param_store().keys())
    assert set(svi.objective.elbo.averages) == {"z"}
    after = list(svi.objective.modules["baseline"].parameters())
    assert all(not torch.equal(a, b) for a, b in zip(after, before))
    # a different batch size restarts the average instead of failing
    svi.step(X[:3])
    assert svi.objective.elbo.averages["z"].shape == (3,)


def test_no_reparam_handler_works_on_any_guide():
    from ppl_vae.infer import NonReparameterized, no_reparam

    model, guide = _pair()
    tr = pyro.poutine.trace(no_reparam(guide)).get_trace(X)
    site = tr.nodes["z"]
    assert isinstance(site["fn"], NonReparameterized) and not site["fn"].has_rsample
    assert not site["value"].requires_grad
    # the guide's own distribution objects are left reparameterizable
    assert pyro.poutine.trace(guide).get_trace(X).nodes["z"]["fn"].has_rsample
    # vectorized particles broadcast the wrapped distribution
    with pyro.plate("particles", 5, dim=-2):
        tr = pyro.poutine.trace(no_reparam(guide)).get_trace(X)
    assert tr.nodes["z"]["value"].shape == (5, N, J)


@pytest.mark.parametrize("name", ["score-avg", "score-nn"])
@pytest.mark.parametrize("particles", [1, 3])
def test_baselines_handle_a_batch_of_one_point(name, particles):
    """Pyro squeezes leading size-1 dims of the downstream cost (batch of one point, or one
    particle); the baselines must follow."""
    model, guide = _pair()
    svi = ppl_vae.SVI(model, guide, make_objective(name, num_particles=particles, x_dim=D))
    for x in (X, X[:1], X[:1], X):
        assert math.isfinite(svi.step(x, num_data=10))


class TwoLayerModel(PyroModule):
    """z2 ~ N(0, 1), z1 | z2 ~ N(a z2, 1), x | z1 ~ N(W z1 + b, sigma^2 I)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([0.8]))
        self.W = nn.Parameter(torch.tensor([[1.0], [-0.5], [0.3]]))
        self.b = nn.Parameter(torch.tensor([0.1, 0.0, -0.2]))

    def forward(self, x, num_data=None):
        with data_plate(x.shape[0], num_data):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(self.a * z2, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ self.W.T + self.b, SIGMA).to_event(1), obs=x)


class BottomUpLinearGuide(PyroModule):
    """q(z1 | x) q(z2 | z1): the second latent is computed from the first one's value."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[0.3, -0.2, 0.1]]))
        self.c = nn.Parameter(torch.tensor([0.2]))
        self.log_s1 = nn.Parameter(torch.tensor([-0.7]))
        self.d = nn.Parameter(torch.tensor([0.4]))
        self.log_s2 = nn.Parameter(torch.tensor([-0.3]))

    def forward(self, x, num_data=None):
        with data_plate(x.shape[0], num_data):
            z1 = pyro.sample("z1", dist.Normal(x @ self.A.T + self.c,
                                               self.log_s1.exp()).to_event(1))
            pyro.sample("z2", dist.Normal(self.d * z1, self.log_s2.exp()).to_event(1))

    @classmethod
    def exact_posterior(cls, model):
        """p(z1 | x) p(z2 | z1): z2 is independent of x given z1, both Gaussian."""
        guide = cls()
        with torch.no_grad():
            a, W, b = model.a, model.W, model.b
            v1 = 1.0 / (1.0 / (1 + a**2) + (W**2).sum() / SIGMA**2)  # Var[z1 | x]
            guide.A.copy_(v1 * W.T / SIGMA**2)
            guide.c.copy_(-v1 * (W.T @ b) / SIGMA**2)
            guide.log_s1.copy_(0.5 * torch.log(v1))
            guide.d.copy_(a / (1 + a**2))
            guide.log_s2.copy_(-0.5 * torch.log(1 + a**2))
        return guide


def test_dreg_is_unbiased_when_guide_latents_depend_on_each_other():
    """z2's guide distribution depends on z1's value: the hook must scale only the uses of z_k
    inside log w_k (the alias), not the path z1 -> z2 inside the guide."""
    model, guide = TwoLayerModel(), BottomUpLinearGuide()
    stats = gradient_statistics(model, guide, X, ["iwae-3", "dreg-3"], draws=400, seed=6,
                                keep_vectors=True)
    for group in ("decoder", "encoder"):
        diff = np.abs(stats["dreg-3"]["mean"][group] - stats["iwae-3"]["mean"][group])
        se = np.sqrt((stats["dreg-3"]["variance"][group] + stats["iwae-3"]["variance"][group])
                     / 400)
        assert (diff <= 4 * se + 1e-6).all(), f"{group}: {diff / se}"


@pytest.mark.parametrize("name", ["stl", "dreg-3"])
def test_path_derivative_is_exact_for_dependent_guide_latents(name):
    """At the exact posterior q(z1|x) q(z2|z1) the path derivative vanishes only if log q(z2|z1)
    is differentiated through z1 as well (parameters stopped, upstream latents not)."""
    model = TwoLayerModel()
    guide = BottomUpLinearGuide.exact_posterior(model)
    stats = gradient_statistics(model, guide, X, [name, "reparam"], draws=20, seed=7,
                                keep_vectors=True)
    assert stats[name]["variance_encoder"] < 1e-8
    assert np.abs(stats[name]["mean"]["encoder"]).max() < 1e-4
    assert stats["reparam"]["variance_encoder"] > 1e-2
