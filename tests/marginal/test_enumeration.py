"""Enumerated discrete sites (config_enumerate) summed out exactly inside each importance
sample, checked against closed forms; the registered ``enum`` objective (TraceEnum_ELBO)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate

from ppl_vae.infer.objectives import make_objective
from ppl_vae.marginal import importance_sampling, naive_monte_carlo

F64 = torch.float64
PI = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
MU = torch.tensor([[-2.0, 0.0], [1.0, 1.0], [3.0, -1.0]], dtype=F64)
W = torch.tensor([[0.8], [-0.5]], dtype=F64)
S = 0.4


def data(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(PI, n, replacement=True, generator=g)
    return MU[y] + torch.randn(n, 2, generator=g, dtype=F64)


@config_enumerate
def mixture(x):
    """y ~ Categorical(pi), x | y ~ N(mu_y, s^2 I): the only latent is discrete."""
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(PI))
        pyro.sample("x", dist.Normal(MU[y], S).to_event(1), obs=x)


def no_latents(x):
    pass


def mixture_log_px(x):
    comp = dist.Normal(MU, S).to_event(1).log_prob(x.unsqueeze(-2))  # (N, 3)
    return torch.logsumexp(comp + PI.log(), -1)


@pytest.mark.parametrize("estimator", ["is", "naive"])
def test_a_discrete_only_model_is_summed_out_exactly(estimator):
    x = data()
    if estimator == "is":
        res = importance_sampling(mixture, no_latents, x, 3, seed=0)
    else:
        res = naive_monte_carlo(mixture, x, 3, seed=0)
    assert torch.allclose(res.log_likelihood, mixture_log_px(x), atol=1e-10)
    assert torch.allclose(res.ess, torch.full_like(res.ess, 3.0))  # equal weights


@config_enumerate
def mixed(x):
    """y ~ Categorical(pi) (enumerated), z ~ N(0, 1), x | y, z ~ N(mu_y + W z, s^2 I)."""
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(PI))
        z = pyro.sample("z", dist.Normal(torch.zeros(1, dtype=F64), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(MU[y] + z @ W.T, S).to_event(1), obs=x)


def mixed_log_px(x):
    cov = W @ W.T + S**2 * torch.eye(2, dtype=F64)
    comp = dist.MultivariateNormal(MU, cov).log_prob(x.unsqueeze(-2))
    return torch.logsumexp(comp + PI.log(), -1)


def wide_z_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 1, dtype=F64), 1.5).to_event(1))


def test_model_side_enumeration_with_a_continuous_latent_is_unbiased():
    x = data()
    pyro.set_rng_seed(0)
    res = importance_sampling(mixed, wide_z_guide, x, 4000)
    exact = mixed_log_px(x)
    assert torch.allclose(res.log_likelihood, exact, atol=float(5 * res.stderr.max()) + 1e-3)


def posterior_z_given_y(x, y):
    """p(z | x, y) for the mixed model: Gaussian, closed form."""
    prec = 1.0 + (W.T @ W).squeeze() / S**2
    var = 1.0 / prec
    mean = var * ((x - MU[y]) @ W).squeeze(-1) / S**2
    return mean.unsqueeze(-1), var ** 0.5


@config_enumerate
def guide_side(x):
    """ss_vae_M2's idiom: the guide enumerates its discrete y, then z ~ q(z | x, y) = p(z|x,y)."""
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(torch.tensor([0.6, 0.2, 0.2], dtype=F64)))
        mean, sd = posterior_z_given_y(x, y)
        pyro.sample("z", dist.Normal(mean, sd).to_event(1))


def test_guide_side_enumeration_with_exact_conditionals_is_exact():
    x = data()
    res = importance_sampling(mixed, guide_side, x, 5, seed=1)
    assert torch.allclose(res.log_likelihood, mixed_log_px(x), atol=1e-8)


def test_the_enum_objective_sums_the_discrete_latent_out():
    x = data()
    objective = make_objective("enum")
    assert objective.can_infer_discrete
    loss = objective.loss(mixture, no_latents, x)  # -ELBO with q = nothing: -log p(x) exactly
    assert loss == pytest.approx(-float(mixture_log_px(x).sum()), abs=1e-8)
