r"""Imputation of missing pixels with a trained model/guide pair: samples of p(x_miss | x_obs).

Method: **self-normalized importance sampling with the guide as proposal, then resampling**
(sampling-importance-resampling, SIR; Rubin 1988), the scheme of Mattei & Frellsen (2019,
"MIWAE"). For each data point, with x̃ = x_obs completed by a fixed fill (the training mean):

    z_k ~ q(z | x̃),   w_k = p(x_obs | z_k) p(z_k) / q(z_k | x̃),   k = 1..K,
    p̂(x_obs)          = (1/K) Σ_k w_k,
    E[x_miss | x_obs] ≈ Σ_k w̃_k E[x_miss | z_k],          w̃_k = w_k / Σ_j w_j,
    draw:  k ~ Categorical(w̃),  x_miss ~ p(x_miss | z_k),
    log p(x_miss | x_obs) ≈ log p̂(x) − log p̂(x_obs),   p̂(x) = (1/K) Σ_k w_k p(x_miss | z_k).

Why this method. The pseudo-Gibbs scheme (:func:`ppl_vae.analysis.generation.impute`; Rezende et al.
2014) alternates z ~ q(z | x) and x_miss ~ p(x_miss | z); because q is not the exact posterior,
its stationary distribution is *not* p(x_miss | x_obs), and it need not even exist. Both
Metropolis-within-Gibbs (Mattei & Frellsen 2018, which corrects each z-move with an
accept/reject step) and SIR are consistent. We use SIR because (i) p(x_obs | z) only needs the
observed site's density *masked* to the observed pixels — no special model code, the site's
distribution is rewritten by :func:`observed_only` / :class:`MaskObservations`, (ii) it is one
vectorized pass, no chain, no burn-in, no mixing to diagnose (the effective sample size of the
weights says how reliable it is, ``ess``), and (iii) the same weights give the conditional
log-likelihood log p(x_miss | x_obs), the ratio of two importance-sampling estimates with shared
samples (consistent as K → ∞; biased for finite K like every IS log-estimate). The conditional
mean uses E[x_miss | z_k] rather than the drawn pixels (Rao-Blackwellization).

Conventions as in :mod:`ppl_vae.marginal`: ``model(x)`` observes ``x`` at one site (default
``"x"``) whose distribution factorizes over pixels (e.g. ``Bernoulli(...).to_event(1)``); every
site is inside a data plate at dim -1 (sized, or without a size); a guide with per-point
parameters is called on all of ``x`` at once. The weights come from the one importance-sampling
engine, :mod:`ppl_vae.infer.importance`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro.poutine.messenger import Messenger

from ppl_vae.errors import ConfigError, DataError
from ppl_vae.infer.importance import log_weights, sample_particles
from ppl_vae.marginal.common import positive_int, probe
from ppl_vae.poutine.trace import site_mean

__all__ = ["missing_mask", "observed_only", "MaskObservations", "ImputationResult",
           "impute"]

_BUDGET = 2**24


def missing_mask(n: int, image_shape, pattern: str, seed: int = 0) -> torch.Tensor:
    """Boolean ``(n, H*W)`` mask of the *observed* pixels (True = observed) for ``pattern``:
    ``bottom-half`` / ``right-half`` (rows / columns from the middle on missing) or
    ``random-P`` (each pixel missing independently with probability P, fixed seed)."""
    h, w = (int(s) for s in image_shape)
    grid = torch.ones(h, w, dtype=torch.bool)
    if pattern == "bottom-half":
        grid[h // 2:, :] = False
    elif pattern == "right-half":
        grid[:, w // 2:] = False
    elif pattern.startswith("random-"):
        try:
            p = float(pattern[len("random-"):])
        except ValueError:
            p = math.nan
        if not 0.0 < p < 1.0:
            raise ConfigError(f"missing pattern {pattern!r}: random-P needs 0 < P < 1")
        gen = torch.Generator().manual_seed(int(seed))
        return torch.rand(n, h * w, generator=gen) >= p
    else:
        raise ConfigError(f"unknown missing pattern {pattern!r}; choose bottom-half, right-half "
                          "or random-P (e.g. random-0.5)")
    return grid.reshape(1, -1).expand(n, -1).clone()


def observed_only(fn, mask: torch.Tensor):
    """The observation distribution ``fn`` with its per-pixel factors masked: ``log_prob``
    sums only the pixels where ``mask`` is True (Pyro's ``.mask`` on the per-pixel base
    distribution, re-wrapped in the same ``Independent``)."""
    import pyro.distributions as dist

    if isinstance(fn, dist.Independent):
        return observed_only(fn.base_dist, mask).to_event(fn.reinterpreted_batch_ndims)
    return fn.mask(mask)


class MaskObservations(Messenger):
    """Restrict the observed site ``site`` to the pixels where ``mask`` is True: under this
    handler log p(x | z) becomes log p(x_obs | z), so e.g.
    ``importance_sampling(MaskObservations(mask)(model), guide, x, K)`` estimates log p(x_obs).
    ``mask`` must broadcast against the site's per-pixel batch shape."""

    def __init__(self, mask: torch.Tensor, site: str = "x"):
        super().__init__()
        self.mask, self.site = mask.bool(), site

    def _pyro_sample(self, msg):
        if msg["name"] == self.site and msg["is_observed"]:
            msg["fn"] = observed_only(msg["fn"], self.mask)


@dataclass
class ImputationResult:
    """Per data point: ``samples`` (N, D) one draw of x_miss | x_obs (observed pixels kept),
    ``mean`` (N, D) E[x_miss | x_obs] filled in, ``log_likelihood`` (N,) log p̂(x_miss | x_obs),
    ``log_p_observed`` / ``log_p_full`` (N,) log p̂(x_obs) and log p̂(x), ``ess`` (N,) effective
    sample size of the K normalized weights."""

    samples: torch.Tensor
    mean: torch.Tensor
    log_likelihood: torch.Tensor
    log_p_observed: torch.Tensor
    log_p_full: torch.Tensor
    ess: torch.Tensor
    num_samples: int
    method: str = "importance-resampling"


@torch.no_grad()
def impute(model, guide, x: torch.Tensor, observed: torch.Tensor,
                      num_samples: int = 1000, fill: torch.Tensor | float = 0.5,
                      obs_site: str = "x", batch_size: int | None = None) -> ImputationResult:
    """Impute the pixels of ``x`` where ``observed`` is False (see the module docstring).

    ``fill`` completes x_obs for the guide's input (a scalar or a (D,) per-pixel training mean);
    ``batch_size`` data points are processed at a time (default: ~2**24 floats per tensor). The
    weights come from the one importance-sampling engine (:mod:`ppl_vae.infer.importance`).
    """
    if x.dim() != 2:
        raise DataError(f"x must have shape (N, D), got {tuple(x.shape)}")
    observed = torch.as_tensor(observed, dtype=torch.bool, device=x.device).expand_as(x)
    k = positive_int(num_samples, "num_samples")
    n, d = x.shape
    layout = probe(model, guide, x, max_plate_nesting=None, data_dim=-1, use_guide=True)
    if obs_site not in layout.observed:
        raise ConfigError(f"the model has no observed site {obs_site!r}")
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).expand(d)
    bs = n if layout.whole_data else (batch_size or max(1, _BUDGET // (k * d)))
    parts = [_impute_block(model, guide, x[b0:b0 + bs], observed[b0:b0 + bs], fill, k, obs_site,
                           layout) for b0 in range(0, n, bs)]
    cat = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return ImputationResult(cat["samples"], cat["mean"], cat["lp_full"] - cat["lp_obs"],
                            cat["lp_obs"], cat["lp_full"], cat["ess"], k)


def _impute_block(model, guide, xb, mb, fill, k, obs_site, layout) -> dict:
    """Weights, conditional means and one resampled draw for one block of points."""
    b = xb.shape[0]
    shape = (k, b)
    mtr, gtr = sample_particles(model, guide, (xb,), {}, k, layout.max_plate_nesting,
                                guide_args=(torch.where(mb, xb, fill),))
    log_p, log_q = log_weights(mtr, gtr, layout.reduce)
    fn = mtr.nodes[obs_site]["fn"]
    lp_site = layout.reduce(mtr.nodes[obs_site]["log_prob"])
    lp_obs = layout.reduce(observed_only(fn, mb).log_prob(xb)).double()
    lp_miss = layout.reduce(observed_only(fn, ~mb).log_prob(xb)).double()
    lw_obs = torch.broadcast_to((log_p - lp_site - log_q).double() + lp_obs, shape)
    lse_obs = torch.logsumexp(lw_obs, 0)
    wn = torch.exp(lw_obs - lse_obs)  # (K, B) normalized weights
    means = torch.broadcast_to(site_mean(fn, fn.sample), (k, b, xb.shape[1]))
    cond_mean = (wn.unsqueeze(-1).to(means.dtype) * means).sum(0)
    idx = torch.multinomial(wn.T.float(), 1).squeeze(-1)  # (B,) resampled particle
    draws = torch.broadcast_to(fn.sample(), (k, b, xb.shape[1]))[idx, torch.arange(b)]
    return {
        "samples": torch.where(mb, xb, draws.to(xb.dtype)),
        "mean": torch.where(mb, xb, cond_mean),
        "lp_obs": lse_obs - math.log(k),
        "lp_full": torch.logsumexp(lw_obs + lp_miss, 0) - math.log(k),
        "ess": 1.0 / (wn ** 2).sum(0),
    }
