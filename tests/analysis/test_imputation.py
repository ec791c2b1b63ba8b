"""Scoring an imputation against the mean-fill and pseudo-Gibbs baselines
(:mod:`ppl_vae.analysis.imputation`)."""

import math

import pytest
import torch

import ppl_vae
from ppl_vae import TrainConfig
from ppl_vae.analysis.generation import impute_pseudo_gibbs as pseudo_gibbs
from ppl_vae.analysis.imputation import (
    evaluate_imputation,
    imputation_figure,
    mean_fill_log_likelihood,
    missing_pixel_error,
)
from ppl_vae.marginal.imputation import impute, missing_mask


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    cfg = TrainConfig(latent_dims=(2,), hidden=(64,), epochs=2, batch_size=64, lr=3e-3)
    return ppl_vae.train(cfg, dataset=digits, progress=False)


def test_missing_pixel_error_and_mean_fill_log_likelihood():
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    observed = torch.tensor([[True, True, False, False]])
    pred = torch.tensor([[0.0, 1.0, 0.5, 0.25]])
    assert missing_pixel_error(pred, x, observed) == pytest.approx((0.25 + 0.0625) / 2)
    p = torch.tensor([0.5, 0.5, 0.8, 0.3])
    assert mean_fill_log_likelihood(x, observed, p) == pytest.approx(math.log(0.8) + math.log(0.7))


def test_evaluate_imputation_matches_its_parts(trained, digits, tmp_path):
    x = digits.split_for("test", trained.model.likelihood)[:20]
    observed = missing_mask(20, digits.image_shape, "bottom-half", seed=0)
    mean = digits.train.mean(0)
    torch.manual_seed(1)
    ev = evaluate_imputation(trained.model, trained.guide, x, observed, mean, 30, seed=2)
    torch.manual_seed(1)
    res = impute(trained.model, trained.guide, x, observed, 30, fill=mean)
    assert torch.equal(ev.result.mean, res.mean)
    torch.manual_seed(2)
    pg = pseudo_gibbs(trained.model, trained.guide, x, observed, iterations=20)
    assert torch.equal(ev.pseudo_gibbs, pg)
    assert ev.vae_error == missing_pixel_error(res.mean, x, observed)
    assert ev.baseline_error == missing_pixel_error(torch.where(observed, x, mean), x, observed)
    assert ev.baseline_log_likelihood == mean_fill_log_likelihood(x, observed, mean)
    s = ev.summary()
    assert s["n"] == 20 and s["samples"] == 30 and s["missing_fraction"] == 0.5
    assert s["vae_log_likelihood"] == pytest.approx(float(res.log_likelihood.mean()))
    assert evaluate_imputation(trained.model, trained.guide, x, observed, mean, 5,
                               binary=False).baseline_log_likelihood is None
    path = imputation_figure(trained.model, trained.guide, ev, x, observed, mean,
                             digits.image_shape, tmp_path / "imp.png", num=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
