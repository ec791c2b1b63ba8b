r"""Model evidence log p(X) of a whole data set, for models with global latents."""

from __future__ import annotations

from dataclasses import replace

import pyro
import torch
from pyro import poutine

from ppl_vae.marginal.common import check_data
from ppl_vae.marginal.result import MarginalLikelihoodResult
from ppl_vae.poutine.trace import plate_nesting

__all__ = ["model_evidence"]

_DATA_SET = "_ppl_vae_data_set"


def _whole(fn, nesting: int):
    """``fn`` run on all of the data, inside a plate of size 1 left of its own plates: to the
    estimators, the whole data set is one point."""
    if fn is None:
        return None

    def wrapped(xs, *args, **kwargs):
        with pyro.plate(_DATA_SET, 1, dim=-(nesting + 1)):
            return fn(xs[0], *args, **kwargs)

    return wrapped


def model_evidence(model, guide, x: torch.Tensor, num_samples: int, estimator: str = "is",
                   **options) -> MarginalLikelihoodResult:
    r"""The model evidence :math:`\log p(X)` of the whole data set ``x``.

    For a model with global latents :math:`\theta` shared by every point and local latents
    :math:`z_n` (e.g. the weights of a Bayesian regression, or Pyro's sparse gamma deep
    exponential family),

    .. math::

        p(X) = \int p(\theta) \prod_{n=1}^N \int p(x_n, z_n \mid \theta)\, dz_n\, d\theta

    does not factorize over points, so there is no per-point :math:`\log p(x_n)`. Each
    importance sample is then a draw of all latents, global and local, together:
    :math:`\log \hat p(X) = \log \frac1K \sum_k p(X, \theta_k, Z_k) / q(\theta_k, Z_k)` with the
    guide as proposal (``"is"``), the prior (``"naive"``) or AIS chains over all latents
    (``"ais"``, the classic use of annealed importance sampling for model comparison [1]).
    The estimators of :mod:`ppl_vae.marginal` run unchanged on the pair wrapped in a plate of
    size 1 left of its own plates, which makes the whole data set one "point"; the result has
    ``log_likelihood`` of shape ``(1,)`` with the usual diagnostics (ESS, Pareto k̂, standard
    error) of the K weights.

    :param model: a Pyro model called as ``model(x)`` on all of ``x``.
    :param guide: a guide over the same latent sites (``None`` for ``"naive"``, or ``"ais"``
        with ``init="prior"``).
    :param torch.Tensor x: the whole data set.
    :param int num_samples: K, importance samples (or AIS chains).
    :param str estimator: ``"is"``, ``"naive"``, ``"elbo"`` or ``"ais"``.
    :param options: passed to the estimator (``particle_chunk``, ``num_steps``, ``seed``, ...).
    :returns: the estimate, with ``estimator`` named ``"<estimator>-evidence"``.
    :rtype: ~ppl_vae.marginal.result.MarginalLikelihoodResult

    **References**

    [1] R. M. Neal, "Annealed importance sampling", Statistics and Computing 11, 2001.

    Example::

        def model(x):  # Beta-Bernoulli: one global latent
            p = pyro.sample("p", dist.Beta(2.0, 2.0))
            with pyro.plate("data", len(x)):
                pyro.sample("x", dist.Bernoulli(p), obs=x)

        res = model_evidence(model, None, x, 10000, "naive")
        res.log_likelihood  # log p(X), shape (1,)
    """
    from ppl_vae.marginal import estimate_log_likelihood

    x = check_data(x)
    with torch.no_grad(), torch.random.fork_rng(devices=[]), poutine.block():
        nesting = plate_nesting(poutine.trace(model).get_trace(x))
        if guide is not None:
            nesting = max(nesting, plate_nesting(poutine.trace(guide).get_trace(x)))
    for key in ("data_dim", "max_plate_nesting", "whole_data", "batch_size"):
        options.pop(key, None)
    result = estimate_log_likelihood(
        _whole(model, nesting), _whole(guide, nesting), x.unsqueeze(0), estimator,
        num_samples, data_dim=-(nesting + 1), max_plate_nesting=nesting + 1, whole_data=True,
        **options)
    return replace(result, estimator=f"{result.estimator}-evidence", num_dims=int(x.numel()))
