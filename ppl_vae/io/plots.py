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

__all__ = ["save_image_grid", "save_figure"]


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
                    row_labels=None) -> Path:
    """Tile ``images`` (n, D) — values in [0, 1] — into one grey-scale PNG."""
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
    ax.set_xticks([])
    if row_labels:
        ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(len(row_labels))])
        ax.set_yticklabels(row_labels)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
