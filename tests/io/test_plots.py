"""The figures of :mod:`ppl_vae.io.plots` are PNG files, for every shape they accept."""

import math

import numpy as np
import pytest

from ppl_vae.io.plots import plot_embeddings, plot_posterior_comparison, save_image_grid

PNG = b"\x89PNG\r\n\x1a\n"


def test_image_grid(tmp_path):
    path = save_image_grid(np.random.rand(6, 64), (8, 8), tmp_path / "g.png", ncol=3,
                           row_labels=["a", "b"], title="t")
    assert path.read_bytes()[:8] == PNG


@pytest.mark.parametrize("dim", [2, 3, 8])
def test_posterior_comparison(tmp_path, dim):
    rng = np.random.default_rng(0)
    points = [{"nuts": rng.normal(size=(50, dim)), "guide": rng.normal(size=(50, dim)),
               "title": f"point {i}"} for i in range(2)]
    path = plot_posterior_comparison(points, tmp_path / "p.png", title="posterior")
    assert path.read_bytes()[:8] == PNG


def test_embeddings(tmp_path):
    rng = np.random.default_rng(0)
    panels = [{"xy": rng.normal(size=(30, 2)), "labels": rng.integers(0, 10, 30),
               "title": "run a\nk-NN acc 0.5", "explained": np.array([0.6, 0.2])},
              {"xy": rng.normal(size=(30, 2)), "labels": rng.integers(0, 10, 30),
               "title": "run b", "explained": np.array([math.nan, math.nan])}]
    assert plot_embeddings(panels, tmp_path / "e.png").read_bytes()[:8] == PNG
