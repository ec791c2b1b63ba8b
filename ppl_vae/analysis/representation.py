r"""What the encoder learned: latent codes as a representation.

* :func:`posterior_means` — the guide's posterior mean E_q[z | x] for every data point, all latent
  sites concatenated (a hierarchical guide gives [z1, z2, ...]; sites in the guide's order).
* :func:`knn_accuracy` — label accuracy of a k-nearest-neighbour classifier (scikit-learn
  ``KNeighborsClassifier``, Euclidean) fitted on the training split's codes and scored on another
  split's codes: how much class information the code keeps, in a form a simple non-parametric
  classifier can read.
* :func:`aggregate_samples` — draws of the *aggregate posterior* q(z) = E_x q(z|x): ``draws``
  samples z ~ q(z|x) per data point (for a point-mass guide: the codes themselves).
* :func:`normality` — how close a set of codes is to the prior N(0, I): ``kl_to_prior`` =
  KL(N(m, S) || N(0, I)) = ½ (tr S + mᵀm − d − log det S) of the Gaussian N(m, S) fitted to them
  (moment matching; it sees only the first two moments), plus the mean absolute skewness and
  excess kurtosis of the standardized marginals (0 for a Gaussian; they see what the fitted
  Gaussian cannot). We apply it to aggregate-posterior draws, not to the posterior means: a VAE
  fits its prior through q(z) = E_x q(z|x), and a collapsed unit (q(z_u|x) = p(z_u)) has constant
  means, which would make S singular and the KL meaningless. An autoencoder's code has no reason
  to be near N(0, I) at all (no prior), which the number shows.
* :func:`pca_2d` — a 2-D principal-component projection for the scatter plots.
* :func:`evaluate_representation` — all of the above for one guide (what ``ppl-vae embed``
  reports); :func:`label_rate` — the share of images a k-NN pixel classifier gives a label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ppl_vae.analysis.generation import encode
from ppl_vae.errors import DataError

__all__ = ["posterior_means", "aggregate_samples", "knn_accuracy", "normality", "pca_2d",
           "RepresentationReport", "evaluate_representation", "label_rate"]


@torch.no_grad()
def posterior_means(guide, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``(N, total latent dim)``: E_q[z | x] of every latent site, concatenated."""
    parts = []
    for i in range(0, x.shape[0], batch_size):
        z = encode(guide, x[i:i + batch_size], mean=True)
        parts.append(torch.cat([v.reshape(v.shape[0], -1) for v in z.values()], -1))
    return torch.cat(parts)


@torch.no_grad()
def aggregate_samples(guide, x: torch.Tensor, draws: int = 10, batch_size: int = 1000):
    """``(N * draws, total latent dim)``: ``draws`` samples z ~ q(z|x) for every point of x."""
    parts = []
    for _ in range(int(draws)):
        for i in range(0, x.shape[0], batch_size):
            z = encode(guide, x[i:i + batch_size])
            parts.append(torch.cat([v.reshape(v.shape[0], -1) for v in z.values()], -1))
    return torch.cat(parts)


def knn_accuracy(z_train, y_train, z_test, y_test, k: int = 5) -> float:
    """Accuracy on (z_test, y_test) of a ``k``-nearest-neighbour classifier fitted on
    (z_train, y_train)."""
    from sklearn.neighbors import KNeighborsClassifier

    z_train, z_test = np.asarray(z_train, dtype=np.float64), np.asarray(z_test, dtype=np.float64)
    if len(z_train) < k:
        raise DataError(f"k-NN with k={k} needs at least {k} training codes, got {len(z_train)}")
    clf = KNeighborsClassifier(n_neighbors=int(k)).fit(z_train, np.asarray(y_train))
    return float(clf.score(z_test, np.asarray(y_test)))


def normality(z) -> dict:
    """Normality statistics of the codes ``z`` (N, d); see the module docstring."""
    z = np.asarray(z, dtype=np.float64)
    n, d = z.shape
    if n < d + 2:
        raise DataError(f"normality statistics need more codes ({n}) than dimensions + 1 ({d})")
    m = z.mean(0)
    s = np.atleast_2d(np.cov(z, rowvar=False))
    sign, logdet = np.linalg.slogdet(s)
    kl = 0.5 * (np.trace(s) + m @ m - d - logdet) if sign > 0 else math.inf
    sd = z.std(0)
    zs = (z - m) / np.where(sd > 0, sd, 1.0)
    skew = np.abs((zs ** 3).mean(0)).mean()
    kurt = np.abs((zs ** 4).mean(0) - 3.0).mean()
    return {"kl_to_prior": float(kl), "mean_abs_skewness": float(skew),
            "mean_abs_excess_kurtosis": float(kurt), "mean_norm": float(np.linalg.norm(m)),
            "mean_variance": float(np.trace(s) / d)}


def pca_2d(z) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) projection on the two leading principal components and their explained-variance
    ratios; codes of dimension <= 2 are returned as they are (padded with zeros for d = 1)."""
    z = np.asarray(z, dtype=np.float64)
    if z.shape[1] <= 2:
        out = z if z.shape[1] == 2 else np.concatenate([z, np.zeros_like(z)], 1)
        return out, np.array([math.nan, math.nan])
    c = z - z.mean(0)
    _, sv, vt = np.linalg.svd(c, full_matrices=False)
    ratio = sv ** 2 / (sv ** 2).sum()
    return c @ vt[:2].T, ratio[:2]


@dataclass
class RepresentationReport:
    """``codes``: (N, J) posterior means of the scored split; ``knn_accuracy``; ``stats``: the
    :func:`normality` statistics of its aggregate-posterior draws."""

    codes: torch.Tensor
    knn_accuracy: float
    stats: dict

    def summary(self) -> dict:
        """``latent_dim``, ``n``, ``knn_accuracy``, ``normality`` (= ``kl_to_prior``) and every
        normality statistic."""
        return {"latent_dim": int(self.codes.shape[1]), "n": int(self.codes.shape[0]),
                "knn_accuracy": self.knn_accuracy, "normality": self.stats["kl_to_prior"],
                **self.stats}


def evaluate_representation(guide, x_train, y_train, x, y, neighbors: int = 5,
                            draws: int = 10) -> RepresentationReport:
    """The guide's codes as a representation (module docstring): the posterior means of ``x``,
    the accuracy of a ``neighbors``-NN classifier fitted on the codes of ``x_train`` (labels
    ``y_train``) and scored on those of ``x`` (labels ``y``), and the normality of ``draws``
    aggregate-posterior draws per point of ``x``. What ``ppl-vae embed`` reports per run."""
    z_train = posterior_means(guide, x_train).cpu()
    z = posterior_means(guide, x).cpu()
    stats = normality(aggregate_samples(guide, x, draws=draws).cpu().numpy())
    return RepresentationReport(z, knn_accuracy(z_train, y_train, z, y, neighbors), stats)


def label_rate(images, x_train, y_train, label: int, neighbors: int = 5) -> float:
    """The fraction of ``images`` (N, D) that a ``neighbors``-NN classifier fitted on the
    training pixels ``x_train`` (labels ``y_train``) assigns to class ``label``: how far decoded
    images (e.g. moved along an attribute vector) look like that class."""
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=int(neighbors)).fit(np.asarray(x_train),
                                                               np.asarray(y_train))
    return float(np.mean(clf.predict(np.asarray(images)) == label))
