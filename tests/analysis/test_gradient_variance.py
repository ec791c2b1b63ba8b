"""Gradient statistics at a trained run's parameters (:func:`run_gradient_statistics`) are
:func:`gradient_statistics` on a fixed, seeded minibatch of the run's split; the bias columns
tell a biased estimator from an unbiased one on the small SBN of ``tests/infer``."""

import math

import pytest
import torch

import ppl_vae
from ppl_vae import TrainConfig
from ppl_vae.analysis.gradient_variance import (
    _max_abs_t_level,
    fixed_minibatch,
    gradient_statistics,
    run_gradient_statistics,
)
from ppl_vae.errors import ConfigError
from ppl_vae.guides import BernoulliGuide
from ppl_vae.models import SigmoidBeliefNetwork


def test_fixed_minibatch_is_seeded():
    data = torch.arange(50.0).reshape(25, 2)
    a, b = fixed_minibatch(data, 7, seed=3), fixed_minibatch(data, 7, seed=3)
    assert torch.equal(a, b) and a.shape == (7, 2)
    assert not torch.equal(a, fixed_minibatch(data, 7, seed=4))
    assert len(set(a[:, 0].tolist())) == 7
    with pytest.raises(ConfigError, match="batch_size"):
        fixed_minibatch(data, 0)


def test_run_gradient_statistics_is_gradient_statistics_on_the_minibatch(tiny_digits, tmp_path):
    cfg = TrainConfig(latent_dims=(2,), hidden=(16,), epochs=1, batch_size=50)
    ppl_vae.train(cfg, out=tmp_path, dataset=tiny_digits, progress=False, reports=False)
    run = ppl_vae.load_run(tmp_path, dataset=tiny_digits)
    res, x = run_gradient_statistics(run, ["trace", "iwae-3"], draws=4, batch_size=8, seed=2)
    assert torch.equal(x, fixed_minibatch(run.split("train"), 8, seed=2))
    ref = gradient_statistics(run.model, run.guide, x, ["trace", "iwae-3"], draws=4, seed=2)
    for name in ("trace", "iwae-3"):
        assert res[name]["total_variance"] == pytest.approx(ref[name]["total_variance"])
        assert res[name]["objective_value"] == pytest.approx(ref[name]["objective_value"])


def test_the_noise_level_of_the_max_abs_z():
    # t with 1 degree of freedom (Cauchy): P(|T| > q) = 1 - (2 / pi) atan(q)
    assert _max_abs_t_level(41, 1) == pytest.approx(math.tan(math.pi / 2 * (1 - 1e-3 / 41)),
                                                    rel=1e-9)
    q = _max_abs_t_level(41, 299)
    assert 4.2 < q < 4.6  # ~ the normal 1 - 0.0005 / 41 quantile, 4.22, a little wider
    assert _max_abs_t_level(41, 4) > 2 * q  # few draws: estimated standard errors, heavy tails


def _sbn():
    """The small sigmoid belief network of tests/infer/test_discrete_estimators.py."""
    torch.manual_seed(0)
    model, guide = SigmoidBeliefNetwork(5, 3), BernoulliGuide(5, 3)
    with torch.no_grad():
        model.prior_logits.copy_(torch.tensor([0.5, -0.5, 0.2]))
    x = torch.tensor([[1.0, 0, 1, 1, 0], [0, 0, 1, 0, 1], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]])
    return model, guide, x


def test_bias_columns_tell_the_relaxation_from_an_unbiased_estimator():
    """Against score-avg's mean gradient: the binary Concrete at temperature 2 is far beyond
    the noise level (measured |z| = 39 against 4.3), DisARM is within it (|z| = 2.4), and
    VIMCO, an unbiased estimator of L_10's gradient, gets no verdict."""
    model, guide, x = _sbn()
    stats = gradient_statistics(model, guide, x, ["score-avg", "gumbel", "disarm", "vimco"],
                                draws=200, num_particles=10, seed=1, warmup=100,
                                options={"temperature": 2.0})
    ref = stats["score-avg"]
    assert ref["reference"] == "score-avg" and ref["target"] == "ELBO"
    assert all(ref[k] is None for k in ("bias_norm", "bias_z_max", "bias_z_threshold",
                                        "bias_detected", "cosine_to_reference"))
    gumbel, disarm, vimco = stats["gumbel"], stats["disarm"], stats["vimco"]
    assert gumbel["bias_z_threshold"] == disarm["bias_z_threshold"] > 3
    assert gumbel["bias_z_max"] > gumbel["bias_z_threshold"] and gumbel["bias_detected"] is True
    assert disarm["bias_z_max"] < disarm["bias_z_threshold"] and disarm["bias_detected"] is False
    assert gumbel["bias_norm"] > 3 * disarm["bias_norm"]
    assert vimco["target"] == "L_10" and vimco["bias_detected"] is None
    assert vimco["bias_z_max"] > vimco["bias_z_threshold"]  # L_10's gradient is not the ELBO's
