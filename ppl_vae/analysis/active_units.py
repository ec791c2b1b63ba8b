"""Active latent units (Burda et al. 2016, "Importance Weighted Autoencoders", section 5.2).

A latent unit u is *active* when its posterior mean moves with the data:

    A_u = Cov_x( E_{q(z|x)}[z_u] ) > 1e-2,

the variance over data points x of the guide's posterior mean. A collapsed unit (its q(z_u|x)
equal to the prior whatever x) has A_u = 0.

How E_q[z_l | x] is computed, for any guide (vectorized, no model-specific code): the guide is
run S times in a particle plate (``dim=-2``, outside the data plate) and, at every latent site,
the *mean of the site's distribution* given its sampled parents is averaged over the S runs:
E_q[z_l | x] = E_{q(parents|x)}[ mean q(z_l | parents, x) ] (Rao-Blackwellized Monte Carlo). It is
exact with any S for a site without latent parents — z1 of a bottom-up guide, zL of the top-down
guide, the single-layer guide's z. For the others, the Monte Carlo error of the S-sample average
m_S(x) inflates its variance over x by E_x[Var_q(m | x)] / S; we subtract the unbiased estimate
of that term (the mean over x of the sample variance across the S runs, divided by S), so
A_u is unbiased for any S >= 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyro
import torch
from pyro import poutine

from ppl_vae.poutine.trace import latent_sites, particle_plate, site_mean

__all__ = ["ActiveUnits", "active_units", "report_active_units", "ACTIVE_UNITS_NAME",
           "THRESHOLD"]

THRESHOLD = 1e-2
ACTIVE_UNITS_NAME = "active_units.csv"


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass
class ActiveUnits:
    """A_u per latent site: ``activity[site]`` is a (dim,) tensor; ``counts[site]`` = #(A_u > t)."""

    activity: dict[str, torch.Tensor]
    threshold: float = THRESHOLD
    num_samples: int = 1

    @property
    def counts(self) -> dict[str, int]:
        return {k: int((a > self.threshold).sum()) for k, a in self.activity.items()}

    @property
    def dims(self) -> dict[str, int]:
        return {k: int(a.numel()) for k, a in self.activity.items()}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: site, dim, active, threshold, num_samples."""
        return pd.DataFrame([{"site": k, "dim": self.dims[k], "active": self.counts[k],
                              "threshold": self.threshold, "num_samples": self.num_samples}
                             for k in self.activity])

    def summary(self) -> str:
        """E.g. ``active units (A_u > 0.01): z1 31/100, z2 8/50``."""
        parts = ", ".join(f"{k} {self.counts[k]}/{self.dims[k]}" for k in self.activity)
        return f"active units (A_u > {self.threshold:g}): {parts}"


@torch.no_grad()
def active_units(guide, x: torch.Tensor, num_samples: int = 100, threshold: float = THRESHOLD,
                 batch_size: int = 500, seed: int = 0) -> ActiveUnits:
    """A_u = Var_x(E_q[z_u | x]) for every unit of every latent site of ``guide`` on data ``x``.

    ``guide(x)`` must put its sites in ``pyro.plate("data", dim=-1)`` (all ppl_vae guides do);
    ``num_samples`` is S of the module docstring (the guide runs once, vectorized over S, per
    batch of ``batch_size`` points). The global RNG state is restored afterwards.
    """
    if x.shape[0] < 2:
        raise ValueError("active units need at least 2 data points (a variance over x)")
    num_samples = max(1, int(num_samples))
    means: dict[str, list[torch.Tensor]] = {}
    noise: dict[str, list[torch.Tensor]] = {}
    with torch.random.fork_rng(devices=[]):
        pyro.set_rng_seed(seed)
        for i in range(0, x.shape[0], batch_size):
            xb = x[i: i + batch_size]
            with particle_plate(num_samples, 1):
                tr = poutine.trace(guide).get_trace(xb)
            for name, site in latent_sites(tr).items():
                if getattr(site["fn"], "event_dim", None) != 1:
                    continue  # only vector-valued latents, as every ppl_vae model has
                m = site_mean(site["fn"], site["value"])
                m = m.expand(num_samples, xb.shape[0], m.shape[-1])
                means.setdefault(name, []).append(m.mean(0))
                if num_samples > 1:
                    noise.setdefault(name, []).append(m.var(0, unbiased=True) / num_samples)
    activity = {}
    for name in sorted(means, key=_natural_key):
        mu = torch.cat(means[name])
        a = mu.var(0, unbiased=True)
        if name in noise:
            a = (a - torch.cat(noise[name]).mean(0)).clamp_min(0.0)
        activity[name] = a.cpu()
    return ActiveUnits(activity, float(threshold), num_samples)


def report_active_units(model, guide, dataset, run_dir=None, split: str = "valid",
                        num_samples: int = 100, seed: int = 0) -> ActiveUnits:
    """Active units of a trained pair on ``dataset``'s ``split`` (binarized as for evaluation).

    Writes ``run_dir/active_units.csv`` (one row per layer) when ``run_dir`` is given.
    """
    from ppl_vae.io.checkpoint import atomic_write_bytes

    x = dataset.split_for(split, getattr(model, "likelihood", None))
    was_training = guide.training
    guide.eval()
    try:
        result = active_units(guide, x, num_samples=num_samples, seed=seed)
    finally:
        guide.train(was_training)
    if run_dir is not None:
        from ppl_vae.io.provenance import csv_columns

        df = result.to_frame()
        df.insert(0, "split", split)
        for key, value in csv_columns().items():  # which checkpoint these figures describe
            df[key] = value
        atomic_write_bytes(Path(run_dir) / ACTIVE_UNITS_NAME, df.to_csv(index=False).encode())
    return result
