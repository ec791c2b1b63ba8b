"""Naive Monte Carlo (prior as proposal) and importance sampling (guide as proposal)."""

from __future__ import annotations

import time
from typing import Callable

import torch

from ppl_vae.errors import ConfigError
from ppl_vae.infer.importance import importance_log_weights
from ppl_vae.marginal.common import (
    check_data,
    optional_positive_int,
    positive_int,
    probe,
    run_weights,
)
from ppl_vae.marginal.result import MarginalLikelihoodResult


# ------------------------------------------------------------------------------------------
# naive Monte Carlo and importance sampling
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def naive_monte_carlo(
    model: Callable,
    x: torch.Tensor,
    num_samples: int,
    *,
    batch_size: int | None = None,
    particle_chunk: int | None = None,
    max_plate_nesting: int | None = None,
    data_dim: int = -1,
    progress: bool = False,
    return_log_weights: bool = False,
    seed: int | None = None,
    index_offset: int = 0,
    whole_data: bool | None = None,
) -> MarginalLikelihoodResult:
    r"""Naive Monte Carlo: z_k ~ p(z), log p̂(x) = log (1/K) Σ_k p(x | z_k), per data point.

    The model is traced with ``x`` observed and the latents drawn from the prior; the weights are
    the observed sites' densities. p̂(x) is unbiased, log p̂(x) is biased downwards, and with a
    posterior much narrower than the prior (many observed dimensions) a feasible K finds no
    sample where p(x|z) is large: the estimate is useless in e.g. 784 dimensions, which k̂ > 0.7
    and an ESS near 1 reveal. See the module docstring for the model conventions, chunking
    (``batch_size`` data points x ``particle_chunk`` samples) and diagnostics. With a ``seed``,
    point i's samples depend only on (seed, ``index_offset`` + i): see
    :func:`~ppl_vae.marginal.common.run_weights`.
    """
    t0 = time.perf_counter()
    k = positive_int(num_samples, "num_samples")
    batch_size = optional_positive_int(batch_size, "batch_size")
    particle_chunk = optional_positive_int(particle_chunk, "particle_chunk")
    x = check_data(x)
    layout = probe(model, None, x, max_plate_nesting=max_plate_nesting, data_dim=data_dim,
                    use_guide=False, whole_data=whole_data)

    def log_weights(xb, kc):
        lw = importance_log_weights(model, None, (xb,), {}, kc, layout.max_plate_nesting,
                                    layout.reduce)
        return torch.broadcast_to(lw, (kc, xb.shape[0]))

    return run_weights("naive", log_weights, x, k, batch_size, particle_chunk, layout, progress,
                       return_log_weights, t0, seed, index_offset)


@torch.no_grad()
def importance_sampling(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int,
    *,
    batch_size: int | None = None,
    particle_chunk: int | None = None,
    max_plate_nesting: int | None = None,
    data_dim: int = -1,
    progress: bool = False,
    return_log_weights: bool = False,
    seed: int | None = None,
    index_offset: int = 0,
    whole_data: bool | None = None,
) -> MarginalLikelihoodResult:
    r"""Importance sampling with the guide as proposal: the IWAE bound L_K, per data point.

    z_k ~ q(z|x), w_k = p(x, z_k) / q(z_k|x), log p̂(x) = log (1/K) Σ_k w_k
    (Burda, Grosse & Salakhutdinov 2016). E[log p̂] = L_K ≤ L_{K+1} ≤ log p(x); K = 1 gives the
    ELBO, and ``log_weight_mean`` is the K-sample estimate of the ELBO. log p(x, z) sums the
    model's sample sites (latent and observed) replayed on the guide's samples; log q(z|x) sums
    the guide's latent sites. See the module docstring for conventions, chunking and diagnostics.
    With a ``seed``, point i's samples depend only on (seed, ``index_offset`` + i): see
    :func:`~ppl_vae.marginal.common.run_weights`.
    """
    t0 = time.perf_counter()
    k = positive_int(num_samples, "num_samples")
    batch_size = optional_positive_int(batch_size, "batch_size")
    particle_chunk = optional_positive_int(particle_chunk, "particle_chunk")
    x = check_data(x)
    if guide is None:
        raise ConfigError("importance_sampling needs a guide (use naive_monte_carlo for the prior)")
    layout = probe(model, guide, x, max_plate_nesting=max_plate_nesting, data_dim=data_dim,
                    use_guide=True, whole_data=whole_data)

    def log_weights(xb, kc):
        lw = importance_log_weights(model, guide, (xb,), {}, kc, layout.max_plate_nesting,
                                    layout.reduce)
        return torch.broadcast_to(lw, (kc, xb.shape[0]))

    return run_weights("is", log_weights, x, k, batch_size, particle_chunk, layout, progress,
                       return_log_weights, t0, seed, index_offset)


