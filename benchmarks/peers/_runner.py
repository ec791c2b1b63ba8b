"""What the per-library runners of ``benchmarks/peers/`` share: arguments, data, the output lines.

Every runner trains the same VAE (encoder 784-500-500-2x50, decoder 50-500-500-784, ReLU,
Bernoulli likelihood, N(0, I) prior, batch 100, Adam lr 1e-3) on the ``train`` split of an
``.npz`` and evaluates the single-sample ELBO on its ``valid`` split once per epoch. It prints

    {"meta": {...}}                                   once: library versions, threads
    {"epoch": 1, "seconds": ..., "valid_elbo": ...}   once per epoch (training + validation)

on stdout; anything else a library prints goes to stderr or is ignored by the driver. Needs
numpy alone (runners run in the project's environment or in the benchmark's own venv).
"""

from __future__ import annotations

import argparse
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np

X_DIM, HIDDEN, Z_DIM, BATCH, LR, EVAL_CHUNK = 784, (500, 500), 50, 100, 1e-3, 1000


def parser(doc: str) -> argparse.ArgumentParser:
    """``--data``, ``--epochs``, ``--seed``, ``--workdir`` (files a trainer insists on writing)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help=".npz with train and valid (uint8)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder of the trainer")
    return p


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The train and valid splits as float32 arrays of 0/1."""
    with np.load(path) as f:
        return f["train"].astype(np.float32), f["valid"].astype(np.float32)


def versions(*names: str) -> dict:
    """Installed versions of the distributions ``names`` (``None`` when absent)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def meta(library: str, *names: str, **extra) -> None:
    """Print the ``meta`` line: the library, package versions and the thread settings."""
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
           if k in os.environ}
    print(json.dumps({"meta": {"library": library, "versions": versions(*names),
                               "thread_env": env, **extra}}), flush=True)


def report(epoch: int, seconds: float, valid_elbo: float) -> None:
    """Print one epoch's line."""
    print(json.dumps({"epoch": epoch, "seconds": seconds, "valid_elbo": float(valid_elbo)}),
          flush=True)
