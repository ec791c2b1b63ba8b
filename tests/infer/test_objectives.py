"""The training objectives: analytic KL vs Monte Carlo, IWAE(K=1) == Trace_ELBO, registry."""

import math

import pyro
import pytest
import torch
from conftest import assert_close
from pyro import poutine

from ppl_vae import ConfigError, available_objectives, make_objective
from ppl_vae.guides import DiagonalNormalGuide
from ppl_vae.models import VAEModel

D, J = 10, 4


@pytest.fixture
def pair():
    torch.manual_seed(3)
    model, guide = VAEModel(D, J, hidden=(8,)), DiagonalNormalGuide(D, J, hidden=(8,))
    x = torch.bernoulli(torch.full((6, D), 0.4))
    return model, guide, x


def analytic_kl(loc, scale):
    """KL(N(mu, diag s^2) || N(0, I)) = -1/2 sum_j (1 + log s_j^2 - mu_j^2 - s_j^2)."""
    return -0.5 * (1 + 2 * scale.log() - loc ** 2 - scale ** 2).sum(-1)


def test_analytic_kl_matches_monte_carlo_kl(pair):
    model, guide, x = pair
    loc, scale = guide.encode(x)
    loc, scale = loc.detach(), scale.detach()
    S = 200_000
    torch.manual_seed(0)
    z = loc + scale * torch.randn(S, *loc.shape)
    q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    mc = (q - p).mean(0)
    se = (q - p).std(0) / math.sqrt(S)
    kl = analytic_kl(loc, scale)
    # Tolerance: 4 Monte Carlo standard errors per data point (two-sided p ~ 6e-5 each).
    assert ((mc - kl).abs() < 4 * se).all(), f"MC {mc} vs analytic {kl} (se {se})"


def test_meanfield_uses_the_analytic_kl(pair):
    """-meanfield loss == log p(x|z) - KL_analytic, with z the guide's draw under the same seed."""
    model, guide, x = pair
    obj = make_objective("meanfield")
    pyro.set_rng_seed(7)
    loss = obj.loss(model, guide, x)
    pyro.set_rng_seed(7)
    g = poutine.trace(guide).get_trace(x)
    m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x)
    log_px = m.nodes["x"]["fn"].log_prob(x).sum()
    loc, scale = guide.encode(x)
    expected = -(log_px - analytic_kl(loc, scale).sum())
    assert_close(loss, expected, atol=1e-3, rtol=1e-5)


def test_iwae_with_one_particle_equals_trace_elbo(pair):
    model, guide, x = pair
    results = {}
    for name in ("trace", "iwae"):
        obj = make_objective(name, num_particles=1)
        pyro.set_rng_seed(11)
        loss = obj.loss_and_grads(model, guide, x)
        grads = [p.grad.clone() for p in (*model.parameters(), *guide.parameters())]
        for p in (*model.parameters(), *guide.parameters()):
            p.grad = None
        results[name] = (loss, grads)
    assert_close(results["iwae"][0], results["trace"][0], atol=1e-4)
    for gi, gt in zip(results["iwae"][1], results["trace"][1]):
        assert_close(gi, gt, atol=1e-4, rtol=1e-4)


def test_iwae_bound_is_at_least_the_elbo_on_average(pair):
    model, guide, x = pair
    pyro.set_rng_seed(0)
    elbo = -sum(make_objective("trace").loss(model, guide, x) for _ in range(200)) / 200
    iwae = -sum(make_objective("iwae-20").loss(model, guide, x) for _ in range(200)) / 200
    assert iwae > elbo  # L_K >= L_1 (Burda et al. 2016, Theorem 1); gap is several nats here


@pytest.mark.parametrize("name", ["trace", "meanfield", "tracegraph", "iwae"])
def test_objectives_registered_and_vectorized(pair, name):
    assert name in available_objectives()
    model, guide, x = pair
    obj = make_objective(name, num_particles=3)
    loss = obj.loss(model, guide, x)
    assert math.isfinite(loss)
    assert obj.elbo.num_particles == 3 and obj.elbo.vectorize_particles


def test_target_is_the_objective_whose_gradient_is_estimated():
    from ppl_vae.infer.objectives import target_of

    for name in ("trace", "reparam", "score-nn", "stl", "disarm-2", "gumbel", "gumbel-st-3",
                 "iwae-1", "dreg"):  # biased or not, and L_1 is the ELBO
        assert target_of(name) == "ELBO", name
    assert target_of("iwae-5") == target_of("dreg", num_particles=5) == "L_5"
    assert target_of("vimco") == "L_2"  # its default K
    assert target_of("rws-3") == "L_3, wake-phi" and target_of("ws") == "wake-sleep"


def test_unknown_objective_and_bad_particles():
    with pytest.raises(ConfigError, match="unknown objective 'elbo2'"):
        make_objective("elbo2")
    with pytest.raises(ConfigError, match="needs at least 1 particles, got 0"):
        make_objective("trace", num_particles=0)
    with pytest.raises(ConfigError, match="needs at least 1 particles, got 0"):
        make_objective("iwae-0")


@pytest.mark.parametrize("name,cls", [("iwae-3", "IWAE_ELBO"), ("dreg-3", "DReG_ELBO")])
def test_importance_weighted_bounds_refuse_a_discrete_guide_by_their_own_name(name, cls):
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(2)).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(2)).to_event(1))

    with pytest.raises(NotImplementedError, match=f"^{cls}: guide site 'z' is not reparam"):
        make_objective(name).loss(model, guide, torch.zeros(4))
