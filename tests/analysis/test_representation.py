"""The codes as a representation, all at once (:func:`evaluate_representation`), and the label
rate of images (:func:`label_rate`)."""

import numpy as np
import pytest
import torch

import ppl_vae
from ppl_vae import TrainConfig
from ppl_vae.analysis.representation import (
    aggregate_samples,
    evaluate_representation,
    knn_accuracy,
    label_rate,
    normality,
    posterior_means,
)


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    cfg = TrainConfig(latent_dims=(3,), hidden=(64,), epochs=2, batch_size=64, lr=3e-3)
    return ppl_vae.train(cfg, dataset=digits, progress=False)


def test_evaluate_representation_is_its_parts(trained, digits):
    lik = trained.model.likelihood
    xtr, x = digits.split_for("train", lik), digits.split_for("test", lik)
    ytr, y = digits.labels_for("train"), digits.labels_for("test")
    torch.manual_seed(3)
    rep = evaluate_representation(trained.guide, xtr, ytr, x, y, neighbors=3, draws=4)
    z = posterior_means(trained.guide, x)
    assert torch.equal(rep.codes, z)
    assert rep.knn_accuracy == knn_accuracy(posterior_means(trained.guide, xtr), ytr, z, y, 3)
    torch.manual_seed(3)
    stats = normality(aggregate_samples(trained.guide, x, draws=4).numpy())
    assert rep.stats == pytest.approx(stats)
    s = rep.summary()
    assert s["latent_dim"] == 3 and s["n"] == x.shape[0]
    assert s["normality"] == s["kl_to_prior"] and s["knn_accuracy"] == rep.knn_accuracy


def test_label_rate_counts_the_images_a_pixel_knn_gives_the_label():
    x_train = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [0.9, 1.0]])
    y_train = torch.tensor([0, 0, 1, 1])
    images = np.array([[0.05, 0.0], [1.0, 0.95], [0.95, 0.9], [0.0, 0.1]])
    assert label_rate(images, x_train, y_train, 1, neighbors=1) == 0.5
    assert label_rate(images[:3], x_train, y_train, 1, neighbors=1) == pytest.approx(2 / 3)
