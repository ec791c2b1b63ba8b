"""Gradient statistics at a trained run's parameters (:func:`run_gradient_statistics`) are
:func:`gradient_statistics` on a fixed, seeded minibatch of the run's split."""

import pytest
import torch

import ppl_vae
from ppl_vae import TrainConfig
from ppl_vae.analysis.gradient_variance import (
    fixed_minibatch,
    gradient_statistics,
    run_gradient_statistics,
)
from ppl_vae.errors import ConfigError


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
