"""AE / DAE as model/guide pairs (refused by the likelihood estimators) and the IAF guide."""

import math

import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

import ppl_vae
from ppl_vae import TrainConfig
from ppl_vae.commands.cli import main
from ppl_vae.errors import ConfigError
from ppl_vae.guides import DenoisingPointGuide, IAFGuide, PointGuide
from ppl_vae.guides.point import corrupt
from ppl_vae.infer.objectives import make_objective
from ppl_vae.models import AutoencoderModel, VAEModel
from ppl_vae.training.builders import build_model_and_guide


def test_ae_elbo_is_exactly_the_reconstruction_log_likelihood():
    torch.manual_seed(0)
    model, guide = AutoencoderModel(64, 3, (16,)), PointGuide(64, 3, (16,))
    x = torch.rand(10, 64).round()
    z = guide.encode(x)
    recon = model.likelihood(model.decoder(z)).log_prob(x).sum()
    loss = Trace_ELBO(max_plate_nesting=1).loss(model, guide, x)
    assert math.isclose(-loss, float(recon.detach()), rel_tol=1e-6)
    tr = poutine.trace(poutine.replay(model, trace=poutine.trace(guide).get_trace(x))).get_trace(x)
    tr.compute_log_prob()
    assert float(tr.nodes["z"]["log_prob"].abs().sum()) == 0.0  # the prior adds no density
    with pytest.raises(ConfigError, match="prior cannot be sampled"):
        ppl_vae.sample_images(model, 4)


@pytest.mark.parametrize("family", ["ae", "dae"])
def test_autoencoders_train(tiny_digits, family):
    cfg = TrainConfig(model=family, latent_dims=(2,), hidden=(32,), epochs=4, batch_size=32,
                      lr=3e-3, noise=0.3)
    res = ppl_vae.train(cfg, dataset=tiny_digits, progress=False)
    m = res.metrics
    assert m.train_elbo.iloc[-1] > m.train_elbo.iloc[0] + 1.0, m
    assert isinstance(res.guide, DenoisingPointGuide if family == "dae" else PointGuide)
    assert res.model.decoder.sizes == (2, 32, 64)  # the VAE's decoder widths for the same config


def test_denoising_guide_corrupts_only_while_training():
    torch.manual_seed(0)
    g = DenoisingPointGuide(64, 2, (16,), noise=0.5)
    x = torch.ones(200, 64)
    assert 0.45 < float((corrupt(x, 0.5) == 0).float().mean()) < 0.55
    g.train()
    assert not torch.equal(g.encode(x), g.encode(x))
    g.eval()
    assert torch.equal(g.encode(x), g.encoder(x))
    gx = corrupt(torch.zeros(1000, 4), 0.3, "gaussian")
    assert 0.27 < float(gx.std()) < 0.33


def test_marginal_likelihood_estimators_refuse_autoencoders():
    torch.manual_seed(0)
    x = torch.rand(5, 64).round()
    ae_model, ae_guide = AutoencoderModel(64, 2, (8,)), PointGuide(64, 2, (8,))
    msg = "improper prior with no density"
    with pytest.raises(ConfigError, match=msg) as info:
        ppl_vae.importance_sampling(ae_model, ae_guide, x, 10)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=msg):
        ppl_vae.naive_monte_carlo(ae_model, x, 10)
    with pytest.raises(ConfigError, match=msg):
        ppl_vae.annealed_importance_sampling(ae_model, ae_guide, x, 2, 3)
    # a proper model with a point-mass guide: nothing to importance-weight with
    with pytest.raises(ConfigError, match="point mass"):
        ppl_vae.importance_sampling(VAEModel(64, 2, (8,)), ae_guide, x, 10)
    # the check leaves the callers' random stream alone
    torch.manual_seed(5)
    a = ppl_vae.importance_sampling(VAEModel(64, 2, (8,)), ppl_vae.guides.DiagonalNormalGuide(
        64, 2, (8,)), x, 4).log_likelihood
    assert torch.isfinite(a).all()


def test_ae_cli_evaluate_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "ae"
    assert main(["train", "--data", "digits", "--model", "ae", "--latent-dim", "2", "--hidden",
                 "16", "--epochs", "1", "--batch-size", "128", "--out", str(run),
                 "--no-progress"]) == 0
    assert not (run / "samples.png").exists() and (run / "reconstructions.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--estimator", "is", "-k", "5"]) == 2
    err = capsys.readouterr().err
    assert "improper prior" in err and len(err.strip().splitlines()) == 1
    png = str(tmp_path / "f.png")
    for argv, message in ((["sample"], "prior cannot be sampled"),
                          (["impute", "-k", "5"], "improper prior"),
                          (["posterior"], "improper prior")):
        assert main([*argv, "--run", str(run), "--out", png]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # the toolkit parts that need no prior density work: manifold over the codes' quantiles
    assert main(["manifold", "--run", str(run), "--out", png, "--steps", "4"]) == 0
    assert main(["reconstruct", "--run", str(run), "--out", png]) == 0


@pytest.mark.parametrize("overrides,message", [
    (dict(noise=1.5), "masking noise is a probability"),
    (dict(noise_type="salt"), "unknown noise type"),
    (dict(noise=-1.0, noise_type="gaussian"), "standard deviation >= 0"),
    (dict(flow_depth=0), "flow_depth must be >= 1"),
])
def test_config_validation(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**overrides)


@pytest.mark.parametrize("overrides,message", [
    (dict(model="dae", noise=0.0), "needs --noise > 0"),
    (dict(model="ae", guide="iaf"), "own point-mass encoder"),
    (dict(model="ae", objective="iwae"), "trains with --objective trace"),
    (dict(guide="iaf", latent_dims=(4, 2)), "one stochastic layer"),
    (dict(guide="iaf", objective="meanfield"), "analytic KL"),
])
def test_builder_refusals(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_model_and_guide(TrainConfig(**overrides), 64)


# ------------------------------------------------------------------------------------------
# IAF
# ------------------------------------------------------------------------------------------
def _random_iaf(seed=0, j=3, depth=2):
    torch.manual_seed(seed)
    g = IAFGuide(8, j, (16,), flow_depth=depth)
    with torch.no_grad():  # a clearly non-identity flow
        for p in g.flows.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return g


def test_iaf_log_density_matches_the_change_of_variables():
    g = _random_iaf()
    x = torch.rand(1, 8)
    loc, scale = g.encode(x)
    transforms = g.transforms()

    def flow(z0):
        z = z0
        for t in transforms:
            z = t(z)
        return z

    z0 = loc + scale * torch.randn(1, 3)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.unsqueeze(0)).squeeze(0), z0[0])
    assert (jac.triu(1).abs() > 1e-4).any() or (jac.tril(-1).abs() > 1e-4).any()
    expected = (dist.Normal(loc, scale).log_prob(z0).sum() - torch.linalg.slogdet(jac)[1])
    z = flow(z0)
    got_cached = g.distribution(x).log_prob(z)  # the value just computed: the cache path
    for t in transforms:  # overwrite every cache: log_prob must invert the flow
        t(torch.randn(1, 3))
    got_inverted = g.distribution(x).log_prob(z.detach().clone())
    assert torch.allclose(got_cached, expected, atol=1e-4), (got_cached, expected)
    assert torch.allclose(got_inverted, expected, atol=1e-3), (got_inverted, expected)
    # and the guide's trace reports the same log q for its own sample
    tr = poutine.trace(g).get_trace(x)
    tr.compute_log_prob()
    site = tr.nodes["z"]
    assert torch.allclose(site["log_prob"], g.distribution(x).log_prob(site["value"]), atol=1e-4)


def test_a_float64_iaf_inverts_float64_values():
    """Pyro's inverse starts from zeros of the default dtype; the guide's runs in the value's."""
    g = _random_iaf().double()
    x = torch.rand(2, 8, dtype=torch.float64)
    d = g.distribution(x)
    z = d.rsample()
    for t in g.transforms():  # no cached inverse: log_prob must invert the flow
        t(torch.randn(2, 3, dtype=torch.float64))
    got = g.distribution(x).log_prob(z.detach().clone())
    assert got.dtype == torch.float64 and torch.get_default_dtype() == torch.float32
    torch.testing.assert_close(got, d.log_prob(z), atol=1e-9, rtol=0)


@pytest.mark.parametrize("objective", ["trace", "iwae-4", "dreg-4"])
def test_iaf_trains_with_sample_and_log_q_objectives(objective):
    torch.manual_seed(0)
    model, guide = VAEModel(64, 3, (16,)), _random_iaf(1, 3)
    guide.encoder = ppl_vae.nn.MLP([64, 16, 6])
    x = torch.rand(32, 64).round()
    before = [p.detach().clone() for p in guide.flows.parameters()]
    svi = ppl_vae.SVI(model, guide, make_objective(objective), lr=1e-2)
    losses = [svi.step(x) for _ in range(40)]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5]) - 1.0
    # the flow's own weights are trained too
    assert any(not torch.equal(a, p) for a, p in zip(before, guide.flows.parameters()))


def test_iaf_importance_sampling_is_a_bound_above_the_elbo():
    torch.manual_seed(0)
    model, guide = VAEModel(8, 3, (16,)), IAFGuide(8, 3, (16,), flow_depth=2)
    with torch.no_grad():  # a wide base distribution: a proposal that covers the posterior
        last = guide.encoder[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.5, 1.5, 1.5]))
    x = torch.rand(6, 8).round()
    torch.manual_seed(0)
    res = ppl_vae.importance_sampling(model, guide, x, 2000)
    assert torch.isfinite(res.log_likelihood).all()
    assert (res.log_likelihood > res.log_weight_mean).all()  # L_K >= ELBO, strictly for q != p
    # the naive estimator (no guide) estimates the same log p(x) in 3 latent dims
    naive = ppl_vae.naive_monte_carlo(model, x, 20000)
    se = (res.stderr**2 + naive.stderr**2).sqrt()  # each estimate's delta-method error
    assert ((res.log_likelihood - naive.log_likelihood).abs() < 4 * se + 0.02).all()
