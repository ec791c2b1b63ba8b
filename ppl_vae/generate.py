"""What the decoder and encoder are for: samples, reconstructions, interpolations, imputation.

Everything here works on any model/guide pair with an observed site (default ``"x"``), by running
the Pyro programs under effect handlers — no model-specific decode/encode methods are needed:

* prior samples: trace ``model(None, batch_size=n)`` and read the observed site's distribution;
* reconstructions: trace ``guide(x)``, replay the model on those latents (``poutine.replay``);
* interpolation: replay the model with latent values moved along a line between two encodings.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine

__all__ = ["sample_images", "reconstruct", "interpolate", "impute", "encode"]


def _mean_of(site) -> torch.Tensor:
    fn = site["fn"]
    try:
        return fn.mean
    except NotImplementedError:
        return fn.sample()


@torch.no_grad()
def sample_images(model, n: int, obs_site: str = "x", mean: bool = True) -> torch.Tensor:
    """``n`` draws from the generative model: E[x|z] (``mean=True``) or x ~ p(x|z), z ~ p(z)."""
    tr = poutine.trace(model).get_trace(None, batch_size=n)
    site = tr.nodes[obs_site]
    return _mean_of(site) if mean else site["value"]


@torch.no_grad()
def encode(guide, x) -> dict:
    """Latent samples z ~ q(z|x) for every latent site of the guide, by name."""
    tr = poutine.trace(guide).get_trace(x)
    return {k: s["value"] for k, s in tr.nodes.items()
            if s["type"] == "sample" and not s["is_observed"]}


@torch.no_grad()
def reconstruct(model, guide, x, obs_site: str = "x") -> torch.Tensor:
    """E[x | z], z ~ q(z|x): decode what the encoder made of ``x``."""
    guide_tr = poutine.trace(guide).get_trace(x)
    tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    return _mean_of(tr.nodes[obs_site])


@torch.no_grad()
def interpolate(model, guide, x_start, x_end, steps: int = 8, obs_site: str = "x") -> torch.Tensor:
    """Decoded images along the straight line between the latent codes of two images.

    Uses the guide's sample for each endpoint (one row per (start, end) pair); returns
    ``(pairs, steps, D)``.
    """
    z0, z1 = encode(guide, x_start), encode(guide, x_end)
    out = []
    for t in torch.linspace(0, 1, steps):
        z = {k: (1 - t) * z0[k] + t * z1[k] for k in z0}
        tr = poutine.trace(poutine.condition(model, data=z)).get_trace(x_start)
        out.append(_mean_of(tr.nodes[obs_site]))
    return torch.stack(out, dim=1)


@torch.no_grad()
def impute(model, guide, x, observed_mask, iterations: int = 20, obs_site: str = "x"):
    """Fill in missing pixels (``observed_mask`` False) by iterating x_miss <- E[x|z], z ~ q(z|x).

    The pseudo-Gibbs scheme of Rezende et al. (2014), section 5.3: start the missing pixels at
    0.5, alternate encoding and decoding, keep the observed pixels fixed.
    """
    observed_mask = observed_mask.bool()
    cur = torch.where(observed_mask, x, torch.full_like(x, 0.5))
    for _ in range(iterations):
        cur = torch.where(observed_mask, x, reconstruct(model, guide, cur, obs_site))
    return cur
