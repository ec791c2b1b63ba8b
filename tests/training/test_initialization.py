"""Initialisation of the VAE's networks (:mod:`ppl_vae.training.initialization`; what makes the
2-layer model start well).

Facts checked: a reset GaussianConditional is exactly N(loc, scale^2) for any parent and still
learns its dependence on the parent; a 2-layer pair with ``prior_init="standard"`` has, sample
by sample, the log weights of the 1-layer VAE built from its bottom layer (and the default
random start does not); Glorot initialisation has the stated weight variance; configuration
errors are one line.
"""

from __future__ import annotations

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine

import ppl_vae
from ppl_vae import TrainConfig, build_model_and_guide
from ppl_vae.commands.cli import main
from ppl_vae.errors import ConfigError
from ppl_vae.guides import BottomUpGuide
from ppl_vae.models import GaussianConditional, HierarchicalVAE
from ppl_vae.nn import MLP, glorot_


def test_reset_conditional_is_the_given_gaussian_for_every_parent_and_still_learns():
    torch.manual_seed(0)
    c = GaussianConditional.mlp(5, 3, hidden=(7,)).reset_to(0.5, 2.0)
    loc, scale = c.loc_scale(torch.randn(11, 5) * 10)
    assert torch.equal(loc, torch.full_like(loc, 0.5))
    torch.testing.assert_close(scale, torch.full_like(scale, 2.0))
    z = torch.randn(11, 3)
    c(torch.randn(11, 5)).log_prob(z).sum().backward()
    last = c.net[-1]
    assert last.weight.grad.abs().max() > 1e-4  # the parent's influence is learned from here
    with pytest.raises(ConfigError, match="exceed min_scale"):
        c.reset_to(0.0, 1e-4)


def _log_weights(model, guide, x, seed):
    pyro.set_rng_seed(seed)
    g = poutine.trace(guide).get_trace(x)
    m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x)
    m.compute_log_prob(), g.compute_log_prob()
    lw = sum(s["log_prob"] for s in m.nodes.values() if s["type"] == "sample")
    return lw - sum(s["log_prob"] for s in g.nodes.values() if s["type"] == "sample")


@pytest.mark.parametrize("prior_init", ["standard", "random"])
def test_standard_prior_init_starts_the_two_layer_pair_as_the_one_layer_vae(prior_init):
    torch.manual_seed(1)
    cfg = TrainConfig(latent_dims=(6, 4), hidden=(16,), activation="tanh",
                      prior_init=prior_init)
    model2, guide2 = build_model_and_guide(cfg, x_dim=20)
    model1 = HierarchicalVAE(model2.decoder, "bernoulli", [], top_dim=6)
    guide1 = BottomUpGuide([guide2.layers[0]])
    x = torch.bernoulli(torch.full((64, 20), 0.3))
    with torch.no_grad():
        lw2, lw1 = _log_weights(model2, guide2, x, 3), _log_weights(model1, guide1, x, 3)
    if prior_init == "standard":
        torch.testing.assert_close(lw2, lw1, atol=1e-4, rtol=1e-5)
    else:
        assert (lw2 - lw1).abs().mean() > 0.1


def test_top_down_guide_with_standard_prior_init_builds_and_keeps_its_heads():
    cfg = TrainConfig(latent_dims=(6, 4), hidden=(16,), guide="top-down",
                      prior_init="standard")
    model, guide = build_model_and_guide(cfg, x_dim=20)
    loc, scale = model.conditionals[0].loc_scale(torch.randn(9, 4))
    assert torch.equal(loc, torch.zeros_like(loc))
    torch.testing.assert_close(scale, torch.ones_like(scale))
    assert guide.heads[-1].net.weight.abs().max() > 0  # q(z2 | x) is not reset


def test_burda_init_glorot_weights_unit_scales_and_pixel_mean_bias(tiny_digits, tmp_path):
    torch.manual_seed(0)
    net = glorot_(MLP([300, 200, 100], "tanh"))
    for layer in (net[0], net[2]):
        expected = 2 / (layer.in_features + layer.out_features)  # Glorot & Bengio, gain 1
        assert layer.weight.var().item() == pytest.approx(expected, rel=0.05)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    torch.manual_seed(0)
    default = MLP([300, 200, 100], "tanh")
    assert default[0].weight.var().item() == pytest.approx(1 / (3 * 300), rel=0.05)
    for dims in [(3,), (4, 2)]:
        cfg = TrainConfig(data="digits", latent_dims=dims, hidden=(16,), weight_init="burda",
                          epochs=0)
        model, guide = build_model_and_guide(cfg, x_dim=64)
        zero = torch.zeros(5, 64)
        scale = (guide.encode(zero)[1] if hasattr(guide, "encode")
                 else guide.layers[0].loc_scale(zero)[1])
        torch.testing.assert_close(scale, torch.ones_like(scale))  # softplus(b) + min = 1
        res = ppl_vae.train(cfg, out=tmp_path / str(len(dims)), dataset=tiny_digits,
                            progress=False, reports=False)
        mean = tiny_digits.train.double().mean(0).clamp(1e-3, 1 - 1e-3)
        bias = res.model.decoder[-1].bias.double()
        torch.testing.assert_close(torch.sigmoid(bias), mean, atol=1e-6, rtol=0)


def test_each_part_of_the_burda_init_applies_alone(tiny_digits, tmp_path):
    cfg = dict(data="digits", latent_dims=(4, 2), hidden=(16,), epochs=0)
    res = ppl_vae.train({**cfg, "weight_init": "pixel-bias"}, out=tmp_path / "p",
                        dataset=tiny_digits, progress=False, reports=False)
    assert res.model.decoder[0].bias.abs().max() > 0  # PyTorch's default bias kept
    mean = tiny_digits.train.double().mean(0).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(torch.sigmoid(res.model.decoder[-1].bias.double()), mean,
                               atol=1e-6, rtol=0)
    torch.manual_seed(0)
    model, guide = build_model_and_guide(TrainConfig(**cfg, weight_init="glorot"), x_dim=64)
    assert torch.equal(model.decoder[-1].bias, torch.zeros(64))  # no pixel bias
    raw = guide.layers[0].net[-1].bias[4:]
    assert torch.equal(raw, torch.zeros_like(raw))  # no unit scale: softplus(0) + min
    model, guide = build_model_and_guide(TrainConfig(**cfg, weight_init="unit-scale"), x_dim=64)
    for c in (model.conditionals[0], *guide.layers):
        last = c.net[-1]
        torch.testing.assert_close(F.softplus(last.bias[c.dim:]) + c.min_scale,
                                   torch.ones(c.dim))  # the scale half of the bias only
        assert last.weight.abs().min() > 0 and last.bias[: c.dim].abs().max() > 0  # torch's
    assert model.decoder[0].bias.abs().max() > 0


def test_burda_init_reaches_the_iaf_guide_and_the_autoencoders():
    cfg = dict(latent_dims=(3,), hidden=(16,), weight_init="burda")
    model, guide = build_model_and_guide(TrainConfig(**cfg, guide="iaf"), x_dim=20)
    torch.testing.assert_close(guide.encode(torch.zeros(2, 20))[1], torch.ones(2, 3))
    for family in ("ae", "sbn"):
        model, guide = build_model_and_guide(TrainConfig(**cfg, model=family), x_dim=20)
        assert all(m.bias.abs().max() == 0 for m in model.modules()
                   if isinstance(m, torch.nn.Linear))


def test_resume_under_another_initialisation_is_refused(tiny_digits, tmp_path):
    cfg = dict(data="digits", latent_dims=(3,), hidden=(16,), epochs=1, weight_init="burda")
    ppl_vae.train(cfg, out=tmp_path, dataset=tiny_digits, progress=False, reports=False)
    with pytest.raises(ppl_vae.errors.CheckpointError, match="weight_init: checkpoint 'burda'"):
        ppl_vae.train(None, out=tmp_path, resume=True, dataset=tiny_digits, progress=False,
                      reports=False, epochs=2, weight_init="torch")
    res = ppl_vae.train(None, out=tmp_path, resume=True, dataset=tiny_digits, progress=False,
                        reports=False, epochs=2)
    assert res.config.weight_init == "burda" and len(res.metrics) == 2


def test_bad_initialisation_names_are_one_line_errors(capsys, tmp_path):
    with pytest.raises(ConfigError, match="unknown prior_init 'zero'"):
        TrainConfig(prior_init="zero")
    with pytest.raises(ConfigError, match="unknown weight_init 'he'"):
        TrainConfig(weight_init="he")
    with pytest.raises(ConfigError, match="unknown weight_init 'glorot\\+he'"):
        TrainConfig(weight_init="glorot+he")
    assert TrainConfig(weight_init="unit-scale+glorot").weight_init == "unit-scale+glorot"
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "never-written"),
                 "--prior-init", "zero"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prior_init" in err[0]
