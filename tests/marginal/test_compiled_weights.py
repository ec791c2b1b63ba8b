"""Compiled log weights (ppl_vae.marginal.common.CompiledLogWeights): importance sampling and
naive Monte Carlo give the generic path's per-point estimates from the same seeded streams on
every shipped pair, the closed form on a linear-Gaussian pair with its exact posterior, and fall
back with one warning where a pair cannot be recorded."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae.errors import ConfigError
from ppl_vae.marginal import importance_sampling, naive_monte_carlo
from ppl_vae.marginal.common import COMPILE_MIN_ROWS, CompiledLogWeights, wants_compile
from ppl_vae.training.builders import build_model_and_guide
from ppl_vae.training.config import TrainConfig
from tests.pairs import LinearGaussian

D = 8
# 70 points: one whole block of 64 (compiled) and one that runs past the end (generic rows)
X = torch.bernoulli(torch.full((70, D), 0.4, dtype=torch.float64),
                    generator=torch.Generator().manual_seed(0))
PAIRS = {
    "vae": dict(latent_dims=(2,), hidden=(5,)),
    "vae-gaussian": dict(latent_dims=(2,), hidden=(5,), likelihood="gaussian"),
    "vae-2-layers": dict(latent_dims=(3, 2), hidden=(5,)),
    "iaf": dict(guide="iaf", latent_dims=(2,), hidden=(5,)),
    "sbn": dict(model="sbn", latent_dims=(3,)),
}


def _pair(name):
    torch.manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.set_default_dtype(torch.float64)
        try:
            model, guide = build_model_and_guide(TrainConfig(**PAIRS[name]), D)
        finally:
            torch.set_default_dtype(torch.float32)
    return model.double(), guide.double()


@pytest.fixture
def replay(monkeypatch):
    """Record the blocks but replay the ATen operations as recorded (no Inductor compile)."""
    monkeypatch.setattr(CompiledLogWeights, "backend", None)


@pytest.mark.parametrize("estimator", ["is", "naive"])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_recorded_blocks_equal_the_generic_path(pair, estimator, replay):
    model, guide = _pair(pair)
    x = X if pair != "vae-gaussian" else X + 0.1 * torch.randn(X.shape, dtype=X.dtype,
                                                               generator=torch.Generator())

    def run(compile):
        if estimator == "is":
            return importance_sampling(model, guide, x, 50, seed=3, compile=compile)
        return naive_monte_carlo(model, x, 50, seed=3, compile=compile)

    generic, recorded = run(False), run(True)
    assert recorded.info["compiled"] and recorded.info["compile_notice"] is None
    assert generic.info == {}
    torch.testing.assert_close(recorded.log_likelihood, generic.log_likelihood,
                               atol=1e-9, rtol=0)
    torch.testing.assert_close(recorded.ess, generic.ess, atol=1e-7, rtol=1e-7)
    # and not a copy of one stream: another seed gives other weights
    other = importance_sampling(model, guide, x, 50, seed=4, compile=True) \
        if estimator == "is" else naive_monte_carlo(model, x, 50, seed=4, compile=True)
    assert (other.log_likelihood - generic.log_likelihood).abs().max() > 1e-3


def test_inductor_blocks_give_the_closed_form_and_the_generic_estimates():
    """Through torch.compile: with the exact posterior as guide every weight is p(x)."""
    g = torch.Generator().manual_seed(1)
    lg = LinearGaussian(torch.randn(5, 2, generator=g, dtype=torch.float64),
                        torch.randn(5, generator=g, dtype=torch.float64), 0.7)
    x = lg.marginal().sample(torch.Size([64]))
    exact = lg.marginal().log_prob(x)
    result = importance_sampling(lg.model, lg.exact_guide, x, 20, seed=0, compile=True)
    generic = importance_sampling(lg.model, lg.exact_guide, x, 20, seed=0, compile=False)
    assert result.info["compiled"] and result.info["compile_seconds"] > 0
    torch.testing.assert_close(result.log_likelihood, exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.log_likelihood, generic.log_likelihood, atol=1e-9, rtol=0)

    model, guide = _pair("vae")
    generic = importance_sampling(model, guide, X[:64], 30, seed=5, compile=False)
    compiled = importance_sampling(model, guide, X[:64], 30, seed=5, compile=True)
    assert compiled.info["compiled"]
    torch.testing.assert_close(compiled.log_likelihood, generic.log_likelihood,
                               atol=1e-9, rtol=0)


def _dynamic_pair():
    """A model with a Python branch on a sampled value: no graph can replay it."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            loc = z if bool((z > 0).all()) else -z
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * x, 1.0))
    return model, guide


def test_a_dynamic_pair_falls_back_with_one_warning(replay):
    model, guide = _dynamic_pair()
    x = torch.randn(130)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = importance_sampling(model, guide, x, 40, seed=0, compile=True)
    notices = [w for w in caught if "not compiled" in str(w.message)]
    assert len(notices) == 1 and "Python decision" in str(notices[0].message)
    assert result.info["compiled"] is False and "Python decision" in result.info["compile_notice"]
    generic = importance_sampling(model, guide, x, 40, seed=0, compile=False)
    torch.testing.assert_close(result.log_likelihood, generic.log_likelihood)


def test_auto_compiles_large_evaluations_only():
    assert wants_compile("auto", COMPILE_MIN_ROWS) and not wants_compile("auto",
                                                                          COMPILE_MIN_ROWS - 1)
    assert wants_compile(True, 1) and not wants_compile(False, 10**9)
    with pytest.raises(ConfigError, match="compile"):
        wants_compile("yes", 1)
    model, guide = _pair("vae")
    assert importance_sampling(model, guide, X, 50, seed=0).info == {}  # 3500 rows: generic


def test_a_later_block_shape_is_recorded_once_it_recurs(replay):
    """K = 130 in particle chunks of 50: every block has a last chunk of 30 samples."""
    model, guide = _pair("vae")
    seen = []
    original = CompiledLogWeights._first_call

    def spy(self, key, xb, kc):
        seen.append(kc)
        return original(self, key, xb, kc)

    CompiledLogWeights._first_call = spy
    try:
        x = X.repeat(4, 1)[:256]  # 4 whole blocks of 64
        compiled = importance_sampling(model, guide, x, 130, seed=0, particle_chunk=50,
                                       compile=True)
    finally:
        CompiledLogWeights._first_call = original
    generic = importance_sampling(model, guide, x, 130, seed=0, particle_chunk=50,
                                  compile=False)
    assert seen == [50, 30]  # the chunk of 30 after it came back capture_after times
    torch.testing.assert_close(compiled.log_likelihood, generic.log_likelihood, atol=1e-9,
                               rtol=0)
    assert math.isfinite(compiled.info["compile_seconds"])


def test_a_failing_compile_falls_back_to_the_same_draws(monkeypatch):
    """torch.compile failing (e.g. no C++ compiler): one warning, the generic estimate."""
    import ppl_vae.infer.compiled as compiled

    def broken(*args, **kwargs):
        raise RuntimeError("InductorError: no working C++ compiler found\ndetails")

    monkeypatch.setattr(compiled, "capture_function", broken)
    model, guide = _pair("vae")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = importance_sampling(model, guide, X, 50, seed=3, compile=True)
    notices = [str(w.message) for w in caught if "not compiled" in str(w.message)]
    assert notices == ["log weights not compiled: InductorError: no working C++ compiler found"]
    generic = importance_sampling(model, guide, X, 50, seed=3, compile=False)
    torch.testing.assert_close(result.log_likelihood, generic.log_likelihood, atol=0, rtol=0)
    assert result.info["compiled"] is False
