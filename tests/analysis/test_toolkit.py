"""What a trained VAE is for: generation, manifolds, attribute vectors, imputation, representation.

Library functions are tested on small model/guide pairs (trained on digits for a few seconds, or
with closed-form answers); the CLI subcommands on a tiny digits run."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pairs import LinearGaussian, decoder_mean
from pyro import poutine

import ppl_vae
from ppl_vae import TrainConfig
from ppl_vae.analysis.generation import (
    apply_attribute,
    attribute_direction,
    decode,
    encode,
    manifold,
    prior_quantiles,
    slerp,
    top_latent,
    traverse,
)
from ppl_vae.errors import ConfigError, DataError
from ppl_vae.marginal.imputation import MaskObservations, impute, missing_mask
from ppl_vae.poutine.handlers import Temperature, tempered
from ppl_vae.poutine.plates import data_plate


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    cfg = TrainConfig(latent_dims=(4,), hidden=(128,), epochs=8, batch_size=32, lr=3e-3)
    return ppl_vae.train(cfg, dataset=digits, progress=False)


@pytest.fixture(scope="module")
def xtest(trained, digits):
    return digits.split_for("test", trained.model.likelihood)


# ------------------------------------------------------------------------------------------
# handlers
# ------------------------------------------------------------------------------------------
def test_temperature_scales_the_prior_std_and_leaves_x_alone():
    model = ppl_vae.models.VAEModel(64, 3, (16,))
    tr = poutine.trace(Temperature(0.3, exclude=("x",))(model)).get_trace(None, batch_size=5)
    assert torch.allclose(tr.nodes["z"]["fn"].stddev, torch.full((5, 3), 0.3))
    assert tr.nodes["z"]["fn"].event_shape == (3,)
    assert isinstance(tr.nodes["x"]["fn"].base_dist, dist.Bernoulli)
    with pytest.raises(ConfigError, match="temperature"):
        tempered(dist.Bernoulli(probs=torch.full((3,), 0.5)), 0.5)
    with pytest.raises(ConfigError, match="> 0"):
        Temperature(0.0)


def test_low_temperature_samples_collapse_to_the_decoded_prior_mean():
    model = ppl_vae.models.VAEModel(64, 3, (16,))
    torch.manual_seed(0)
    cold = ppl_vae.sample_images(model, 6, temperature=1e-6)
    assert torch.allclose(cold, decoder_mean(model, torch.zeros(1, 3)).expand(6, -1), atol=1e-5)
    warm = ppl_vae.sample_images(model, 6)
    assert (warm - warm[0]).abs().max() > 1e-3  # T = 1 gives different images
    torch.manual_seed(3)
    a = ppl_vae.sample_images(model, 6, mean=False, temperature=0.5)
    torch.manual_seed(3)
    b = ppl_vae.sample_images(model, 6, mean=False, temperature=0.5)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}


def test_point_latents_uses_the_guide_mean(trained, xtest):
    x = xtest[:7]
    loc, _ = trained.guide.encode(x)
    z = encode(trained.guide, x, mean=True)["z"]
    assert torch.allclose(z, loc)
    rec = ppl_vae.reconstruct(trained.model, trained.guide, x)
    assert torch.allclose(rec, decoder_mean(trained.model, loc), atol=1e-6)
    assert torch.equal(rec, ppl_vae.reconstruct(trained.model, trained.guide, x))


# ------------------------------------------------------------------------------------------
# interpolation, manifold, traversal
# ------------------------------------------------------------------------------------------
def test_slerp_endpoints_and_norm():
    a = torch.tensor([[3.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 3.0, 0.0]])
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(), torch.tensor(3.0), atol=1e-5)  # the line's midpoint: 2.12
    assert torch.allclose(mid, torch.tensor([[1.0, 1.0, 0.0]]) * 3 / math.sqrt(2), atol=1e-5)


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolation_shapes_and_endpoints(trained, xtest, method):
    path = ppl_vae.interpolate(trained.model, trained.guide, xtest[:3], xtest[3:6], steps=6,
                               method=method, mean=True)
    assert path.shape == (3, 6, 64)
    rec = ppl_vae.reconstruct(trained.model, trained.guide, xtest[:6])
    assert torch.allclose(path[:, 0], rec[:3], atol=1e-5)
    assert torch.allclose(path[:, -1], rec[3:6], atol=1e-5)
    with pytest.raises(ConfigError, match="unknown interpolation"):
        ppl_vae.interpolate(trained.model, trained.guide, xtest[:1], xtest[1:2], method="cubic")


def test_manifold_decodes_the_normal_quantile_grid():
    torch.manual_seed(0)
    model = ppl_vae.models.VAEModel(64, 2, (16,))
    guide = ppl_vae.guides.DiagonalNormalGuide(64, 2, (16,))
    x = torch.rand(10, 64).round()
    imgs = manifold(model, guide, x, steps=5)
    assert imgs.shape == (25, 64)
    u = torch.linspace(0.05, 0.95, 5)
    q = torch.distributions.Normal(0.0, 1.0).icdf(u)
    # row 0 is the top of the picture (largest z_1), column 0 the smallest z_0
    corner = decoder_mean(model, torch.tensor([[q[0], q[-1]], [q[-1], q[0]]]))
    assert torch.allclose(imgs[0], corner[0], atol=1e-6)
    assert torch.allclose(imgs[24], corner[1], atol=1e-6)
    model4 = ppl_vae.models.VAEModel(64, 4, (16,))
    guide4 = ppl_vae.guides.DiagonalNormalGuide(64, 4, (16,))
    with pytest.raises(ConfigError, match="2-dimensional latent"):
        manifold(model4, guide4, x)


def test_traversal_moves_only_the_chosen_dims():
    torch.manual_seed(0)
    model = ppl_vae.models.VAEModel(64, 4, (16,))
    guide = ppl_vae.guides.DiagonalNormalGuide(64, 4, (16,))
    x = torch.rand(1, 64).round()
    base = encode(guide, x, mean=True)["z"]
    imgs = traverse(model, guide, x, [1, 3], steps=4)
    assert imgs.shape == (16, 64)
    q = prior_quantiles(model, guide, x, "z", 4)
    z = base.clone()
    z[0, 1], z[0, 3] = q[2, 1], q[0, 3]  # column 2, bottom row (smallest z_3)
    assert torch.allclose(imgs[12 + 2], decoder_mean(model, z)[0], atol=1e-6)
    rows = traverse(model, guide, x, [0, 1, 2], steps=5)
    assert rows.shape == (15, 64)
    with pytest.raises(ConfigError, match="out of range"):
        traverse(model, guide, x, [4], steps=3)


def test_hierarchical_manifold_uses_the_top_latent():
    torch.manual_seed(0)
    model = ppl_vae.models.HierarchicalVAE.mlp(64, (5, 2), (16,))
    guide = ppl_vae.guides.BottomUpGuide.mlp(64, (5, 2), (16,))
    x = torch.rand(6, 64).round()
    assert top_latent(model, guide, x) == "z2"
    imgs = manifold(model, guide, x, steps=3)
    z2 = torch.tensor([[-1.6448536, 1.6448536]])
    z1 = model.conditionals[0].loc_scale(z2)[0]  # the mean of p(z1 | z2)
    assert torch.allclose(imgs[0], decoder_mean(model, z1)[0], atol=1e-5)


# ------------------------------------------------------------------------------------------
# attribute vectors, labels
# ------------------------------------------------------------------------------------------
def test_attribute_direction_is_the_difference_of_mean_codes(trained, digits):
    x = digits.split_for("train", trained.model.likelihood)[:300]
    y = digits.labels_for("train")[:300]
    d = attribute_direction(trained.guide, x, y == 0)
    z = encode(trained.guide, x, mean=True)["z"]
    assert torch.allclose(d["z"], z[y == 0].mean(0) - z[y != 0].mean(0), atol=1e-6)
    out = apply_attribute(trained.model, trained.guide, x[:4], d, [0.0, 1.0])
    assert out.shape == (4, 2, 64)
    assert torch.allclose(out[:, 0], ppl_vae.reconstruct(trained.model, trained.guide, x[:4]),
                          atol=1e-6)
    assert torch.allclose(out[:, 1], decode(trained.model, {"z": z[:4] + d["z"]}), atol=1e-6)
    with pytest.raises(DataError, match="some but not all"):
        attribute_direction(trained.guide, x, torch.zeros(300, dtype=torch.bool))


def test_digits_labels_match_the_images(digits):
    from sklearn.datasets import load_digits

    b = load_digits()
    for split in ("train", "test"):
        x, y = digits.split(split), digits.labels_for(split)
        assert y.shape == (x.shape[0],) and y.dtype == torch.int64
        for i in (0, 17, x.shape[0] - 1):
            j = np.where(np.abs(b.data / 16.0 - x[i].numpy()).sum(1) < 1e-6)[0]
            assert b.target[j[0]] == int(y[i])


def test_npz_labels_optional(tmp_path):
    from ppl_vae.io.data import load_dataset

    rng = np.random.RandomState(0)
    arrs = {k: rng.randint(0, 2, (n, 16)).astype(np.uint8)
            for k, n in (("train", 20), ("valid", 5), ("test", 6))}
    np.savez(tmp_path / "nolab.npz", **arrs)
    with pytest.raises(DataError, match="has no labels"):
        load_dataset(str(tmp_path / "nolab.npz")).labels_for("test")
    np.savez(tmp_path / "lab.npz", **arrs, train_labels=np.arange(20) % 3,
             test_labels=np.arange(6) % 3)
    ds = load_dataset(str(tmp_path / "lab.npz"))
    assert ds.labels_for("test").tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(DataError, match="no labels for the 'valid' split"):
        ds.labels_for("valid")
    np.savez(tmp_path / "bad.npz", **arrs, train_labels=np.arange(19))
    with pytest.raises(DataError, match="must have shape"):
        load_dataset(str(tmp_path / "bad.npz"))


# ------------------------------------------------------------------------------------------
# imputation
# ------------------------------------------------------------------------------------------
def test_missing_masks():
    m = missing_mask(3, (8, 8), "bottom-half")
    assert m.shape == (3, 64) and m[:, :32].all() and not m[:, 32:].any()
    r = missing_mask(3, (4, 4), "right-half").reshape(3, 4, 4)
    assert r[:, :, :2].all() and not r[:, :, 2:].any()
    a = missing_mask(50, (8, 8), "random-0.5", seed=1)
    b = missing_mask(50, (8, 8), "random-0.5", seed=1)
    assert torch.equal(a, b) and 0.4 < a.float().mean() < 0.6
    with pytest.raises(ConfigError, match="unknown missing pattern"):
        missing_mask(1, (8, 8), "top-half")
    with pytest.raises(ConfigError, match="0 < P < 1"):
        missing_mask(1, (8, 8), "random-1.5")


def test_importance_imputation_matches_the_gaussian_conditional():
    torch.manual_seed(0)
    lg = LinearGaussian(torch.randn(5, 2, dtype=torch.float64), torch.randn(5, dtype=torch.float64),
                        0.5)
    x = lg.marginal().sample((3,))
    obs = torch.tensor([True, True, False, True, False])
    # proposal: the exact posterior p(z | x_obs) (the linear-Gaussian model of the observed
    # coordinates): every weight is p(x_obs), and p(x_miss | x_obs) = E[p(x_miss | z)]
    lg_obs = LinearGaussian(lg.w[obs], lg.b[obs], lg.s)
    torch.manual_seed(1)
    res = impute(lg.model, lambda xf: lg_obs.exact_guide(xf[:, obs]), x, obs,
                            num_samples=40000, fill=torch.zeros(5, dtype=torch.float64))
    mvn = lg.marginal()
    cov, mu = mvn.covariance_matrix, mvn.loc
    o, m = obs, ~obs
    s_oo, s_mo, s_mm = cov[o][:, o], cov[m][:, o], cov[m][:, m]
    gain = s_mo @ torch.linalg.inv(s_oo)
    for i in range(3):
        cm = mu[m] + gain @ (x[i, o] - mu[o])
        ccov = s_mm - gain @ s_mo.T
        exact_ll = dist.MultivariateNormal(cm, ccov).log_prob(x[i, m])
        exact_obs = dist.MultivariateNormal(mu[o], s_oo).log_prob(x[i, o])
        assert abs(float(res.log_p_observed[i] - exact_obs)) < 1e-6
        assert abs(float(res.log_likelihood[i] - exact_ll)) < 0.03, (res.log_likelihood[i],
                                                                     exact_ll)
        assert torch.allclose(res.mean[i, m], cm, atol=0.03)
        assert torch.equal(res.mean[i, o], x[i, o]) and torch.equal(res.samples[i, o], x[i, o])
    # a generic proposal (wider than the prior, blind to x) converges to the same answers
    def wide(xf):
        with data_plate(xf.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(2, dtype=xf.dtype), 1.5).to_event(1))

    torch.manual_seed(2)
    res2 = impute(lg.model, wide, x, obs, num_samples=40000, fill=0.0)
    assert torch.allclose(res2.log_likelihood, res.log_likelihood, atol=0.08)
    # the observed-only density through the generic handler and ppl_vae's IS estimator
    is_obs = ppl_vae.importance_sampling(MaskObservations(obs)(lg.model), wide, x, 40000)
    assert torch.allclose(is_obs.log_likelihood, res.log_p_observed, atol=0.05)


def test_imputation_beats_mean_filling_on_held_out_digits(trained, digits, xtest):
    x = xtest[:150]
    obs = missing_mask(x.shape[0], (8, 8), "bottom-half")
    mean = digits.train.mean(0)
    torch.manual_seed(0)
    res = impute(trained.model, trained.guide, x, obs, num_samples=300, fill=mean)
    miss = ~obs
    vae = ((res.mean - x) ** 2)[miss].mean()
    base = ((mean.expand_as(x) - x) ** 2)[miss].mean()
    assert vae < 0.95 * base, (vae, base)
    assert res.samples.shape == x.shape and set(res.samples[miss].unique().tolist()) <= {0.0, 1.0}
    torch.manual_seed(0)
    again = impute(trained.model, trained.guide, x, obs, num_samples=300, fill=mean)
    assert torch.equal(again.samples, res.samples)
    assert (res.log_likelihood < 0).all() and (res.ess >= 1).all() and (res.ess <= 300).all()


# ------------------------------------------------------------------------------------------
# representation
# ------------------------------------------------------------------------------------------
def test_normality_statistics():
    from ppl_vae.analysis.representation import normality

    rng = np.random.RandomState(0)
    std = normality(rng.randn(20000, 2))
    assert std["kl_to_prior"] < 0.005 and std["mean_abs_skewness"] < 0.05
    wide = normality(2.0 * rng.randn(20000, 2))
    exact = 0.5 * (2 * 4.0 - 2 - 2 * math.log(4.0))  # KL(N(0, 4I) || N(0, I)), d = 2
    assert abs(wide["kl_to_prior"] - exact) < 0.05
    skewed = normality(rng.exponential(size=(20000, 2)))
    assert skewed["mean_abs_skewness"] > 1.5 and skewed["mean_abs_excess_kurtosis"] > 3


def test_knn_accuracy_and_pca():
    from ppl_vae.analysis.representation import knn_accuracy, pca_2d

    rng = np.random.RandomState(0)
    y = rng.randint(0, 3, 300)
    z = np.eye(3)[y] * 10 + rng.randn(300, 3)
    assert knn_accuracy(z[:200], y[:200], z[200:], y[200:]) == 1.0
    noise = rng.randn(300, 3)
    assert knn_accuracy(noise[:200], y[:200], noise[200:], y[200:]) < 0.6
    flat = np.c_[rng.randn(100, 2) * [3.0, 1.0], np.zeros((100, 3))]
    xy, ratio = pca_2d(flat)
    assert xy.shape == (100, 2) and abs(ratio.sum() - 1.0) < 1e-9 and ratio[0] > ratio[1]


def test_posterior_means_concatenate_all_sites(trained, xtest):
    from ppl_vae.analysis.representation import aggregate_samples, posterior_means

    z = posterior_means(trained.guide, xtest[:30], batch_size=7)
    assert torch.allclose(z, trained.guide.encode(xtest[:30])[0])
    guide = ppl_vae.guides.BottomUpGuide.mlp(64, (5, 3), (16,))
    assert posterior_means(guide, xtest[:10]).shape == (10, 8)
    assert aggregate_samples(trained.guide, xtest[:10], draws=3).shape == (30, 4)
