"""Bidirectional Monte Carlo against the closed-form log p(x) of a linear-Gaussian model."""

from __future__ import annotations

import json

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae.marginal import bidirectional_monte_carlo
from ppl_vae.marginal.bdmc import simulate

F64 = torch.float64


class LG:
    """z ~ N(0, I_2), x | z ~ N(W z + b, 0.5^2 I_4), with p(x) and p(z | x) in closed form."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(4, 2, generator=g, dtype=F64)
        self.b = torch.randn(4, generator=g, dtype=F64)
        self.s = 0.5
        self.cov = torch.linalg.inv(torch.eye(2, dtype=F64) + self.W.T @ self.W / self.s**2)

    def model(self, x=None, batch_size=None):
        n = x.shape[0] if x is not None else batch_size
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def guide(self, x, shift=0.0, scale=1.0):
        mean = (x - self.b) @ self.W @ self.cov / self.s**2
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean + shift,
                                                     covariance_matrix=scale * self.cov))

    def bad_guide(self, x):
        return self.guide(x, shift=0.4, scale=2.0)

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(4, dtype=F64)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)


def test_simulate_draws_from_the_model():
    lg = LG()
    x, z = simulate(lg.model, 5, seed=1)
    assert x.shape == (5, 4) and set(z) == {"z"} and z["z"].shape == (5, 2)


def test_forward_and_reverse_sandwich_the_exact_value_and_the_gap_closes():
    lg = LG()
    x, z = simulate(lg.model, 30, seed=2)
    exact = lg.log_px(x)
    short, long = (bidirectional_monte_carlo(lg.model, lg.bad_guide, 8, steps, x=x, z=z, seed=0)
                   for steps in (2, 200))
    # two temperatures: a wide sandwich, the exact value inside it
    assert float(short.lower.log_likelihood.mean()) < float(exact.mean()) \
        < float(short.upper.log_likelihood.mean())
    # 200 temperatures: both bounds within 0.05 nats of the truth, the gap much smaller
    assert abs(float((long.lower.log_likelihood - exact).mean())) < 0.05
    assert abs(float((long.upper.log_likelihood - exact).mean())) < 0.05
    assert float(long.gap.mean()) < 0.5 * float(short.gap.mean())
    # per point: bracketed within 3 Monte Carlo standard errors of each bound
    lo = long.lower.log_likelihood - 3 * long.lower.stderr
    hi = long.upper.log_likelihood + 3 * long.upper.stderr
    inside = ((lo <= exact) & (exact <= hi)).double().mean()
    assert float(inside) >= 0.9, float(inside)
    summary = long.summary()
    assert summary["n"] == 30 and summary["chains"] == 8 and summary["num_steps"] == 200


def test_one_temperature_from_an_exact_sample_with_the_exact_posterior_is_exact():
    """T = 1: the reverse weight is q(z*|x) / p(x, z*) = 1 / p(x) for q = p(z|x)."""
    lg = LG()
    x, z = simulate(lg.model, 6, seed=3)
    res = bidirectional_monte_carlo(lg.model, lg.guide, 3, 1, x=x, z=z)
    assert torch.allclose(res.upper.log_likelihood, lg.log_px(x), atol=1e-8)
    assert torch.allclose(res.lower.log_likelihood, lg.log_px(x), atol=1e-8)


def test_the_cli_runs_bdmc_on_a_trained_run(tmp_path, capsys, tiny_digits):
    import ppl_vae
    from ppl_vae.commands.cli import main

    out = tmp_path / "run"
    ppl_vae.train(dict(data="digits", latent_dims=(2,), hidden=(16,), epochs=1, batch_size=64),
                  out=out, dataset=tiny_digits, progress=False, reports=False)
    assert main(["bdmc", "--run", str(out), "-n", "4", "-k", "2", "--anneal-steps", "5",
                 "--leapfrog", "2", "--json", "--no-progress"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["n"] == 4 and len(row["per_point"]["upper"]) == 4
    assert row["upper"] > row["lower"] - 1.0 and "provenance" in row


def test_x_without_z_is_refused():
    from ppl_vae.errors import ConfigError

    lg = LG()
    with pytest.raises(ConfigError, match="pass both x and z"):
        bidirectional_monte_carlo(lg.model, lg.guide, 2, 2, x=torch.zeros(3, 4, dtype=F64))
