"""PNG figures (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ppl_vae.io.checkpoint import atomic_write_bytes  # noqa: E402

__all__ = ["save_image_grid", "save_figure", "plot_posterior_comparison", "plot_embeddings"]


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it; the PNG carries the
    checkpoint it came from where one was declared (:mod:`ppl_vae.io.provenance`)."""
    from ppl_vae.io.provenance import png_metadata

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata=png_metadata())
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_image_grid(images, image_shape, path, ncol: int | None = None, title: str | None = None,
                    row_labels=None, col_labels=None, xlabel: str | None = None,
                    ylabel: str | None = None) -> Path:
    """Tile ``images`` (n, D) — values in [0, 1] — into one grey-scale PNG; ``row_labels`` /
    ``col_labels`` label the rows / columns (e.g. the latent values of a manifold), ``xlabel``
    / ``ylabel`` the axes."""
    imgs = np.asarray(images, dtype=np.float32).reshape(-1, *image_shape)
    n = imgs.shape[0]
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    h, w = image_shape
    grid = np.full((nrow * (h + 1) + 1, ncol * (w + 1) + 1), 0.25, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = imgs[i]
    scale = max(1.0, 28.0 / max(h, w)) * 0.035
    size = (max(2.0, grid.shape[1] * scale), max(2.0, grid.shape[0] * scale))
    fig, ax = plt.subplots(figsize=size)
    ax.imshow(np.clip(grid, 0, 1), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    if col_labels:
        ax.set_xticks([1 + c * (w + 1) + w / 2 for c in range(len(col_labels))])
        ax.set_xticklabels(col_labels, rotation=90 if len(col_labels) > 8 else 0)
    else:
        ax.set_xticks([])
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if row_labels:
        ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(len(row_labels))])
        ax.set_yticklabels(row_labels)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_posterior_comparison(points, path, title: str | None = None) -> Path:
    """Draws of the exact posterior next to the guide's, one panel per data point.

    ``points``: a list of dicts with ``"nuts"`` and ``"guide"`` — (S, J) arrays of draws — and a
    ``"title"``. A 2-D latent gives a scatter per point; more dimensions a row of histograms of
    the first (up to 6) coordinates per point. Returns the path."""
    points = [{**pt, "nuts": np.asarray(pt["nuts"]), "guide": np.asarray(pt["guide"])}
              for pt in points]
    dim = points[0]["nuts"].shape[-1]
    n = len(points)
    if dim == 2:
        fig, axes = plt.subplots(1, n, figsize=(4 * n, 4), squeeze=False)
        for ax, pt in zip(axes[0], points):
            a, b = pt["nuts"], pt["guide"]
            ax.scatter(b[:, 0], b[:, 1], s=3, alpha=0.3, color="tab:orange", label="q(z|x) guide")
            ax.scatter(a[:, 0], a[:, 1], s=3, alpha=0.3, color="tab:blue", label="p(z|x) NUTS")
            ax.set_xlabel("z[0]"), ax.set_ylabel("z[1]")
            ax.set_title(pt.get("title", ""), fontsize=9)
        axes[0][0].legend(loc="best", fontsize=8, markerscale=3)
    else:
        cols = min(dim, 6)
        fig, axes = plt.subplots(n, cols, figsize=(2.6 * cols, 2.2 * n), squeeze=False)
        for r, pt in enumerate(points):
            for c in range(cols):
                ax = axes[r][c]
                a, b = pt["nuts"][:, c], pt["guide"][:, c]
                lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
                bins = np.linspace(lo, hi, 40)
                ax.hist(a, bins, density=True, alpha=0.5, color="tab:blue", label="NUTS p(z|x)")
                ax.hist(b, bins, density=True, histtype="step", color="tab:orange", lw=1.5,
                        label="guide q(z|x)")
                ax.set_yticks([])
                ax.set_title(f"z[{c}]" + (f"   {pt.get('title', '')}" if c == 0 else ""),
                             fontsize=8, loc="left")
        axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_embeddings(panels, path) -> Path:
    """2-D codes coloured by label, one panel per run, side by side.

    ``panels``: a list of dicts with ``"xy"`` (N, 2) coordinates, ``"labels"`` (N,) integer
    labels (0..9), ``"title"``, and optionally ``"explained"`` (the PCA explained-variance ratios
    of :func:`ppl_vae.analysis.representation.pca_2d`; NaN or absent when the codes are 2-D
    themselves). Returns the path."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.3), squeeze=False)
    sc = None
    for ax, pan in zip(axes[0], panels):
        xy = np.asarray(pan["xy"])
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(pan["labels"]), cmap="tab10", s=6,
                        vmin=-0.5, vmax=9.5)
        ratio = pan.get("explained")
        pca = ratio is not None and not np.isnan(np.asarray(ratio)[0])
        pc = f" (PCA {np.asarray(ratio).sum():.0%} of variance)" if pca else ""
        first, _, rest = str(pan.get("title", "")).partition("\n")
        ax.set_title(first + pc + ("\n" + rest if rest else ""), fontsize=9)
        ax.set_xlabel("PC 1" if pca else "z[0]"), ax.set_ylabel("PC 2" if pca else "z[1]")
    fig.subplots_adjust(wspace=0.3)
    fig.colorbar(sc, ax=axes[0].tolist(), label="label", ticks=range(10))
    return save_figure(fig, path)
