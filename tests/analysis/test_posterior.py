"""NUTS posterior samples and the approximation / amortization gaps, checked against a
linear-Gaussian model whose posterior and marginal likelihood are known in closed form."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pairs import LinearGaussian

from ppl_vae.analysis.posterior import (
    LocalGaussianGuide,
    check_posterior,
    guide_samples,
    inference_gaps,
    nuts_posterior,
)
from ppl_vae.errors import ConfigError, DataError
from ppl_vae.poutine.plates import data_plate


def test_nuts_recovers_the_exact_gaussian_posterior():
    torch.manual_seed(0)
    lg = LinearGaussian(torch.randn(6, 2), torch.randn(6), 1.0)  # correlated posterior
    x = lg.marginal().sample((1,))
    ps = nuts_posterior(lg.model, x, num_samples=250, warmup=120, chains=2, seed=1,
                        jit_compile=True)
    assert ps.samples["z"].shape == (2, 250, 2)
    mean, cov = lg.posterior(x)
    assert abs(float(cov[0, 1])) > 0.005  # not a diagonal posterior
    f = ps.flat()
    assert torch.allclose(f.mean(0), mean[0], atol=0.12), (f.mean(0), mean)
    assert torch.allclose(torch.cov(f.T), cov, atol=0.06), (torch.cov(f.T), cov)
    assert ps.r_hat_max < 1.05 and ps.ess_bulk_min > 100
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(ps.summary.columns)
    with pytest.raises(DataError, match="exactly one data point"):
        nuts_posterior(lg.model, lg.marginal().sample((2,)))


class DiagonalPosteriorCase:
    """Orthogonal columns of W: the exact posterior is a diagonal Gaussian (in the guide family).
    The amortized guide is deliberately off: mean shrunk by ``shrink``, std inflated by
    ``inflate``; its ELBO gap is then KL(q || p(z|x)) in closed form."""

    def __init__(self, shrink=0.7, inflate=1.4):
        q, _ = torch.linalg.qr(torch.randn(8, 2, generator=torch.Generator().manual_seed(3)))
        self.lg = LinearGaussian(q * torch.tensor([2.0, 1.0]), torch.zeros(8), 0.7)
        self.shrink, self.inflate = shrink, inflate

    def guide(self, x):
        mean, cov = self.lg.posterior(x)
        with data_plate(x.shape[0]):
            pyro.sample("z", dist.Normal(self.shrink * mean,
                                         self.inflate * cov.diagonal().sqrt()).to_event(1))

    def kl(self, x):
        mean, cov = self.lg.posterior(x)
        q = dist.Normal(self.shrink * mean, self.inflate * cov.diagonal().sqrt()).to_event(1)
        p = dist.Normal(mean, cov.diagonal().sqrt()).to_event(1)
        return torch.distributions.kl_divergence(q, p)


def test_gaps_when_the_family_contains_the_posterior():
    torch.manual_seed(0)
    case = DiagonalPosteriorCase()
    cov = case.lg.posterior(torch.zeros(1, 8))[1]
    assert abs(float(cov[0, 1])) < 1e-6
    x = case.lg.marginal().sample((2,)) + 1.0
    res = inference_gaps(case.lg.model, case.guide, x, num_samples=3000, steps=500, lr=3e-2,
                         seed=0)
    exact = case.lg.marginal().log_prob(x).double()
    assert torch.allclose(res.log_px, exact, atol=0.03), (res.log_px, exact)
    # q* reaches the exact posterior: no approximation gap ...
    assert (res.approximation_gap.abs() < 0.03).all(), res.approximation_gap
    # ... and the amortized guide's whole gap is its KL to the posterior
    kl = case.kl(x).double()
    assert (kl > 0.2).all()
    gap = res.amortization_gap
    assert torch.allclose(gap, kl, atol=0.05, rtol=0.04), (gap, kl)
    s = res.summary()
    assert math.isclose(s["inference_gap"], s["approximation_gap"] + s["amortization_gap"],
                        rel_tol=1e-9, abs_tol=1e-9)


def test_local_guide_starts_at_the_amortized_output():
    case = DiagonalPosteriorCase()
    x = torch.ones(1, 8)
    local = LocalGaussianGuide.from_guide(case.guide, x)
    mean, cov = case.lg.posterior(x)
    assert torch.allclose(local.loc["z"], 0.7 * mean[0], atol=1e-5)
    draws = guide_samples(local, x, 20000)["z"]
    assert torch.allclose(draws.std(0), 1.4 * cov.diagonal().sqrt(), rtol=0.03)


def test_posterior_refuses_autoencoders():
    from ppl_vae.guides import PointGuide
    from ppl_vae.models import AutoencoderModel

    model, guide = AutoencoderModel(16, 2, (8,)), PointGuide(16, 2, (8,))
    x = torch.rand(1, 16).round()
    with pytest.raises(ConfigError, match="improper prior"):
        nuts_posterior(model, x, guide=guide)
    with pytest.raises(ConfigError, match="improper prior"):
        inference_gaps(model, guide, x)


def test_same_seed_same_numbers():
    case = DiagonalPosteriorCase()
    x = case.lg.marginal().sample((1,)) + 1.0
    a = inference_gaps(case.lg.model, case.guide, x, num_samples=200, steps=30, seed=4)
    b = inference_gaps(case.lg.model, case.guide, x, num_samples=200, steps=30, seed=4)
    assert torch.equal(a.log_px, b.log_px) and torch.equal(a.elbo_optimized, b.elbo_optimized)
    c = inference_gaps(case.lg.model, case.guide, x, num_samples=200, steps=30, seed=5)
    assert not torch.equal(a.log_px, c.log_px)
    p = nuts_posterior(case.lg.model, x, num_samples=15, warmup=10, chains=2, seed=3)
    q = nuts_posterior(case.lg.model, x, num_samples=15, warmup=10, chains=2, seed=3)
    assert torch.equal(p.samples["z"], q.samples["z"]) and p.samples["z"].shape == (2, 15, 2)


def test_check_posterior_puts_nuts_beside_the_guide():
    case = DiagonalPosteriorCase()
    x = case.lg.marginal().sample((1,)) + 1.0
    check = check_posterior(case.lg.model, case.guide, x, num_samples=20, warmup=10, chains=2,
                            seed=3, gap_samples=100, gap_steps=10)
    assert check.nuts.shape == check.guide.shape == (40, 2)
    assert torch.equal(check.nuts, nuts_posterior(case.lg.model, x, num_samples=20, warmup=10,
                                                  chains=2, guide=case.guide, seed=3).flat())
    row = check.summary()
    assert {"r_hat_max", "ess_bulk_min", "divergences", "guide_mean", "posterior_sd",
            "approximation_gap", "amortization_gap", "log_px"} <= set(row)
    mean, _ = case.lg.posterior(x)
    assert torch.allclose(row["guide_mean"], case.shrink * mean[0], atol=0.5)
    no_gaps = check_posterior(case.lg.model, case.guide, x, num_samples=5, warmup=5, chains=1,
                              gaps=False)
    assert no_gaps.gaps is None and "log_px" not in no_gaps.summary()
