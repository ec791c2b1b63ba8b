"""Generation on any model/guide pair: samples, reconstructions, interpolation, imputation."""

import pytest
import torch
from pairs import decoder_mean

import ppl_vae
from ppl_vae import TrainConfig


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    cfg = TrainConfig(latent_dims=(4,), hidden=(128,), epochs=8, batch_size=32, lr=3e-3)
    return ppl_vae.train(cfg, dataset=digits, progress=False)


def test_samples_and_reconstructions_shapes_and_range(trained, digits):
    imgs = ppl_vae.sample_images(trained.model, 10)
    assert imgs.shape == (10, 64) and (imgs >= 0).all() and (imgs <= 1).all()
    x = digits.split_for("test", trained.model.likelihood)[:20]
    rec = ppl_vae.reconstruct(trained.model, trained.guide, x)
    assert rec.shape == x.shape
    # a trained autoencoder reconstructs its input better than the data mean does
    mean_img = digits.train.mean(0)
    assert ((rec - x) ** 2).mean() < ((mean_img - x) ** 2).mean()


def test_interpolation_endpoints_are_reconstructions(trained, digits):
    x = digits.split_for("test", trained.model.likelihood)[:4]
    torch.manual_seed(1)
    path = ppl_vae.interpolate(trained.model, trained.guide, x[:2], x[2:4], steps=5)
    assert path.shape == (2, 5, 64)
    torch.manual_seed(1)
    z0 = ppl_vae.encode(trained.guide, x[:2])["z"]
    assert torch.allclose(path[:, 0], decoder_mean(trained.model, z0), atol=1e-6)


def test_imputation_keeps_observed_pixels_and_beats_the_constant_guess(trained, digits):
    x = digits.split_for("test", trained.model.likelihood)[:100]
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, 32:] = False  # bottom half of each 8x8 digit missing
    torch.manual_seed(0)
    filled = ppl_vae.impute_pseudo_gibbs(trained.model, trained.guide, x, mask, iterations=10)
    assert torch.equal(filled[mask], x[mask])
    err = ((filled - x) ** 2)[~mask].mean()
    baseline = ((0.5 - x) ** 2)[~mask].mean()
    assert err < 0.8 * baseline, (err, baseline)
