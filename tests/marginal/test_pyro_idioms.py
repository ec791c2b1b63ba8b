"""The log-likelihood estimators on pairs written the way Pyro's own examples write them:
plates without a size, guides with one parameter per data point, global latents (model
evidence against closed forms)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppl_vae
from ppl_vae.errors import ConfigError
from ppl_vae.marginal import (
    annealed_importance_sampling,
    importance_sampling,
    model_evidence,
    naive_monte_carlo,
)

F64 = torch.float64


class LG:
    """z ~ N(0, I_k), x | z ~ N(W z + b, sigma^2 I_d), written with Pyro's own plates."""

    def __init__(self, d=4, k=2, sigma=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.d, self.k, self.sigma = d, k, sigma
        self.W = torch.randn(d, k, generator=g, dtype=F64)
        self.b = torch.randn(d, generator=g, dtype=F64)
        self.post_cov = torch.linalg.inv(torch.eye(k, dtype=F64) + self.W.T @ self.W / sigma**2)
        self.post_tril = torch.linalg.cholesky(self.post_cov)

    def post_mean(self, x):
        return (x - self.b) @ self.W @ self.post_cov.T / self.sigma**2

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.k, dtype=F64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def bad_guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(self.post_mean(x) + 0.3,
                                                     scale_tril=1.5 * self.post_tril))

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.d, dtype=F64)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)

    def sample(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.k, generator=g, dtype=F64)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, self.d, generator=g,
                                                                dtype=F64)


@pytest.fixture
def lg():
    return LG()


def unsized(lg):
    """The linear-Gaussian pair with ``pyro.plate("data")`` and no size, the prior sized by the
    batch (ss_vae_M2's idiom)."""
    def model(x):
        with pyro.plate("data"):
            loc = torch.zeros(x.shape[0], lg.k, dtype=F64)
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ lg.W.T + lg.b, lg.sigma).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data"):
            pyro.sample("z", dist.MultivariateNormal(lg.post_mean(x) + 0.3,
                                                     scale_tril=1.5 * lg.post_tril))
    return model, guide


@pytest.mark.parametrize("estimator", ["is", "naive", "ais"])
def test_unsized_data_plate_gives_the_sized_pair_numbers(lg, estimator):
    x = lg.sample(5)
    model, guide = unsized(lg)
    run = {
        "is": lambda m, g: importance_sampling(m, g, x, 50, seed=3),
        "naive": lambda m, g: naive_monte_carlo(m, x, 50, seed=3),
        "ais": lambda m, g: annealed_importance_sampling(m, g, x, 4, 5, seed=3),
    }[estimator]
    got = run(model, guide).log_likelihood
    want = run(lg.model, lg.bad_guide).log_likelihood
    assert torch.allclose(got, want, atol=1e-10)


def per_point_pair(lg, x):
    """A non-amortized guide (sparse_gamma_def's idiom): one variational parameter per data point,
    plates of the fixed size N. The parameters are set to the exact posterior, so IS is exact."""
    n = x.shape[0]

    def model(xs):
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(lg.k, dtype=F64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ lg.W.T + lg.b, lg.sigma).to_event(1), obs=xs)

    def guide(xs):
        loc = pyro.param("loc_per_point", lg.post_mean(x).clone())
        with pyro.plate("data", n):
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=lg.post_tril))
    return model, guide


def test_per_point_guide_parameters_are_run_on_the_whole_data(lg):
    pyro.clear_param_store()
    x = lg.sample(7)
    model, guide = per_point_pair(lg, x)
    exact = lg.log_marginal(x)
    res = importance_sampling(model, guide, x, 20, seed=0)
    assert torch.allclose(res.log_likelihood, exact, atol=1e-8)  # q = p(z|x): every weight p(x)
    res_batched = importance_sampling(model, guide, x, 20, batch_size=2, particle_chunk=7)
    assert torch.allclose(res_batched.log_likelihood, exact, atol=1e-8)
    naive = naive_monte_carlo(model, x, 20000, seed=0)
    assert torch.allclose(naive.log_likelihood, exact, atol=6 * float(naive.stderr.max()) + 0.05)
    pyro.clear_param_store()


# -- global latents -----------------------------------------------------------------------------
A, B = 2.0, 3.0


def beta_bernoulli(x):
    p = pyro.sample("p", dist.Beta(torch.tensor(A, dtype=F64), torch.tensor(B, dtype=F64)))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Bernoulli(p), obs=x)


def beta_posterior_guide(x):
    s = x.sum()
    pyro.sample("p", dist.Beta(A + s, B + x.shape[0] - s))


def beta_bernoulli_evidence(x):
    s, n = float(x.sum()), x.shape[0]
    return math.lgamma(A + s) + math.lgamma(B + n - s) - math.lgamma(A + B + n) \
        - (math.lgamma(A) + math.lgamma(B) - math.lgamma(A + B))


X01 = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=F64)


def test_global_latents_are_refused_with_the_real_reason():
    with pytest.raises(ConfigError, match="global latents.*model_evidence"):
        importance_sampling(beta_bernoulli, beta_posterior_guide, X01, 10)
    with pytest.raises(ConfigError, match="global latents"):
        naive_monte_carlo(beta_bernoulli, X01, 10)


def test_beta_bernoulli_evidence_exact_with_the_posterior_and_close_from_the_prior():
    exact = beta_bernoulli_evidence(X01)
    res = model_evidence(beta_bernoulli, beta_posterior_guide, X01, 10, "is")
    assert res.log_likelihood.shape == (1,) and res.estimator == "is-evidence"
    assert res.log_likelihood.item() == pytest.approx(exact, abs=1e-9)
    pyro.set_rng_seed(0)
    naive = model_evidence(beta_bernoulli, None, X01, 20000, "naive")
    assert naive.log_likelihood.item() == pytest.approx(exact, abs=4 * naive.stderr.item())
    assert ppl_vae.model_evidence is model_evidence


class BayesianRegression:
    """w ~ N(0, I/alpha) shared by all points, y_n ~ N(x_n . w, sigma^2): closed-form evidence
    and posterior (a conjugate Gaussian model)."""

    def __init__(self, n=6, d=2, alpha=2.0, sigma=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.X = torch.randn(n, d, generator=g, dtype=F64)
        self.alpha, self.sigma, self.d = alpha, sigma, d
        w = torch.randn(d, generator=g, dtype=F64) / math.sqrt(alpha)
        self.y = self.X @ w + sigma * torch.randn(n, generator=g, dtype=F64)
        self.post_cov = torch.linalg.inv(alpha * torch.eye(d, dtype=F64)
                                         + self.X.T @ self.X / sigma**2)
        self.post_mean = self.post_cov @ self.X.T @ self.y / sigma**2

    def model(self, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(self.d, dtype=F64),
                                         1.0 / math.sqrt(self.alpha)).to_event(1))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal((w * self.X).sum(-1), self.sigma), obs=y)

    def guide(self, y, scale=1.0):
        pyro.sample("w", dist.MultivariateNormal(self.post_mean,
                                                 covariance_matrix=scale * self.post_cov))

    def evidence(self):
        n = self.y.shape[0]
        cov = self.sigma**2 * torch.eye(n, dtype=F64) + self.X @ self.X.T / self.alpha
        return float(dist.MultivariateNormal(torch.zeros(n, dtype=F64), cov).log_prob(self.y))


def test_bayesian_regression_evidence_is_ais_and_naive():
    br = BayesianRegression()
    exact = br.evidence()
    assert model_evidence(br.model, br.guide, br.y, 5).log_likelihood.item() == \
        pytest.approx(exact, abs=1e-9)
    pyro.set_rng_seed(1)
    wide = model_evidence(br.model, lambda y: br.guide(y, scale=2.0), br.y, 4000)
    assert wide.log_likelihood.item() == pytest.approx(exact, abs=4 * wide.stderr.item() + 1e-3)
    ais = model_evidence(br.model, lambda y: br.guide(y, scale=2.0), br.y, 16, "ais",
                         num_steps=50, seed=0)
    assert ais.log_likelihood.item() == pytest.approx(exact, abs=4 * ais.stderr.item() + 0.02)
