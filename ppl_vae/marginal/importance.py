"""Naive Monte Carlo (prior as proposal) and importance sampling (guide as proposal)."""

from __future__ import annotations

import time
from typing import Callable

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from ppl_vae.errors import ConfigError
from ppl_vae.infer.importance import check_same_latents, importance_log_weights
from ppl_vae.marginal.common import (
    check_data,
    optional_positive_int,
    positive_int,
    probe,
    run_weights,
)
from ppl_vae.marginal.result import MarginalLikelihoodResult
from ppl_vae.poutine.trace import latent_sites, observed_sites, particle_plate, sample_sites


# ------------------------------------------------------------------------------------------
# a block's real rows only (the seeded path's blocks that run past an end of x)
# ------------------------------------------------------------------------------------------
class _Sampled(Exception):
    """Every latent site of the model has been sampled (the prior's draws are complete)."""


class _StopAfter(Messenger):
    """Stops the program (``_Sampled``) once each of ``names`` has been sampled and recorded:
    the draws from the prior without the work that follows them (the decoder)."""

    def __init__(self, names):
        super().__init__()
        self.left = set(names)

    def _pyro_post_sample(self, msg):
        self.left.discard(msg["name"])
        if not self.left:
            raise _Sampled


def _draws(model, guide, xb, kc, layout):
    """The latent draws of a whole block (padding included), exactly as the full computation
    makes them: the guide's trace, or the model's up to its last latent site (no guide)."""
    with particle_plate(kc, layout.max_plate_nesting):
        if guide is not None:
            return poutine.trace(guide).get_trace(xb)
        with poutine.trace() as tracer:
            try:
                with _StopAfter(layout.latent):
                    model(xb)
            except _Sampled:
                pass
        return tracer.trace


def _rows_of(trace, rows: slice, size: int, layout):
    """A trace holding only the latent values of ``trace`` at data rows ``rows`` (of ``size``),
    to replay the model on; None where a site's shape does not allow it."""
    out = poutine.Trace()
    for name in layout.latent:
        site = trace.nodes.get(name)
        if site is None or site["type"] != "sample" or site["is_observed"] or \
                site["infer"].get("enumerate") == "parallel":
            return None
        value = site["value"]
        axis = value.dim() - site["fn"].event_dim + layout.data_dim
        if axis < 0 or value.shape[axis] not in (1, size):
            return None
        if value.shape[axis] == size:
            value = value.narrow(axis, rows.start, rows.stop - rows.start)
        out.nodes[name] = {**site, "value": value}
    return out


def _sum_sites(sites, reduce):
    total = 0.0
    for site in sites.values():
        total = total + reduce(site["log_prob"])
    return total


def rows_log_weights(model, guide, xb, kc, layout, rows: slice):
    """``(kc, rows)`` log weights of the data rows ``rows`` of the block ``xb`` alone, equal to
    the same rows of the whole block's weights (``importance_log_weights``): the latents are
    drawn for the whole block (the guide, or the prior up to the model's last latent site: the
    same random numbers), the model — the work per sample — runs on the real rows only, on
    their draws. None where this does not apply (enumerated sites; the caller then computes the
    whole block)."""
    draws = _draws(model, guide, xb, kc, layout)
    sliced = _rows_of(draws, rows, xb.shape[0], layout)
    if sliced is None:
        return None
    with particle_plate(kc, layout.max_plate_nesting):
        mtr = poutine.trace(poutine.replay(model, trace=sliced)).get_trace(xb[rows])
    if guide is None:
        mtr.compute_log_prob(lambda name, site: site["is_observed"])
        lw = _sum_sites(observed_sites(mtr), layout.reduce)
    else:
        check_same_latents(mtr, draws)
        latent = latent_sites(draws)
        draws.compute_log_prob(lambda name, site: name in latent)
        mtr.compute_log_prob()
        log_q = _sum_sites(latent, layout.reduce)
        if torch.is_tensor(log_q) and log_q.shape[-1] == xb.shape[0]:
            log_q = log_q[:, rows]
        lw = _sum_sites(sample_sites(mtr), layout.reduce) - log_q
    return torch.broadcast_to(lw, (kc, rows.stop - rows.start))


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
    compile: bool | str = "auto",
) -> MarginalLikelihoodResult:
    r"""Naive Monte Carlo estimate of :math:`\log p(x)` per data point, the prior as proposal.

    .. math::

        \log \hat p(x) = \log \frac{1}{K} \sum_{k=1}^K p(x \mid z_k), \qquad z_k \sim p(z),

    where :math:`p(x \mid z_k)` is the product of the model's observed sites' densities, the
    model being traced with ``x`` observed and its latents drawn from the prior.
    :math:`\hat p(x)` is unbiased and :math:`\log \hat p(x)` biased downwards (Jensen). When the
    posterior is much narrower than the prior (many observed dimensions) a feasible :math:`K`
    finds no sample where :math:`p(x \mid z)` is large: the estimate is far below
    :math:`\log p(x)` (useless in e.g. 784 dimensions), which an effective sample size near 1
    [1] and a Pareto :math:`\hat k > 0.7` [2] reveal. See the module docstring for the model
    conventions, chunking and diagnostics.

    :param model: a Pyro model ``model(x)`` with the data points of ``x`` in a vectorized plate.
    :param torch.Tensor x: the data, points along dimension 0.
    :param int num_samples: :math:`K`, prior samples per data point.
    :param batch_size: data points per chunk. Default: enough for about 2**25 floats per tensor
        of ``particle_chunk`` samples (not used with a ``seed``).
    :type batch_size: int or None
    :param particle_chunk: samples per chunk (with a ``seed``, default 1000 and part of the
        definition of the random streams).
    :type particle_chunk: int or None
    :param max_plate_nesting: the model's plate depth; default: read from a probe trace.
    :type max_plate_nesting: int or None
    :param int data_dim: the batch dimension of the data plate. Default -1.
    :param bool progress: show a progress bar (on stderr). Default False.
    :param bool return_log_weights: also return the ``(N, K)`` log weights in
        ``result.log_weights``. Default False.
    :param seed: if given, point :math:`i`'s samples are a function of (``seed``,
        ``index_offset + i``, :math:`K`, ``particle_chunk``) alone, whatever the batch size and
        however the points are split across workers
        (:func:`~ppl_vae.marginal.common.run_weights`); default: the global RNG.
    :type seed: int or None
    :param int index_offset: the global index of ``x[0]`` (for ``seed``). Default 0.
    :param whole_data: ``True``: call the pair on all of ``x`` at once (a guide with one
        parameter per data point; :func:`~ppl_vae.marginal.model_evidence`); ``None``
        (default): detected by the probe; ``False``: never.
    :type whole_data: bool or None
    :param compile: run the log weights of whole blocks as one recorded and compiled tensor
        program (:class:`~ppl_vae.marginal.common.CompiledLogWeights`: the same random draws,
        the arithmetic fused by Inductor); ``"auto"`` (default): when N x K is at least
        :data:`~ppl_vae.marginal.common.COMPILE_MIN_ROWS`. A pair that cannot be recorded runs
        generic with one warning. ``result.info`` then holds ``compiled``,
        ``compile_seconds`` and ``compile_notice``.
    :type compile: bool or str
    :returns: per-point ``log_likelihood``, ``stderr``, ``ess``, ``pareto_k``,
        ``log_weight_mean`` and ``log_weight_var`` (shape ``(N,)``), ``estimator="naive"``.
    :rtype: ~ppl_vae.marginal.result.MarginalLikelihoodResult

    Example::

        import torch
        from ppl_vae.marginal import naive_monte_carlo
        from ppl_vae.models import VAEModel

        model = VAEModel(x_dim=20, latent_dim=2, hidden=(16,))
        x = torch.rand(5, 20).bernoulli()
        result = naive_monte_carlo(model, x, num_samples=100, seed=0)
        assert result.log_likelihood.shape == (5,)

    **References**

    [1] A. Kong, *A Note on Importance Sampling using Standardized Weights*, Technical Report
    348, Department of Statistics, University of Chicago, 1992.

    [2] A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry, *Pareto Smoothed Importance
    Sampling*, JMLR 25, 2024.
    """
    t0 = time.perf_counter()
    k = positive_int(num_samples, "num_samples")
    batch_size = optional_positive_int(batch_size, "batch_size")
    particle_chunk = optional_positive_int(particle_chunk, "particle_chunk")
    x = check_data(x)
    layout = probe(model, None, x, max_plate_nesting=max_plate_nesting, data_dim=data_dim,
                    use_guide=False, whole_data=whole_data)

    def log_weights(xb, kc, rows=None):
        if rows is not None:
            return rows_log_weights(model, None, xb, kc, layout, rows)
        lw = importance_log_weights(model, None, (xb,), {}, kc, layout.max_plate_nesting,
                                    layout.reduce, data_dim=layout.data_dim)
        return torch.broadcast_to(lw, (kc, xb.shape[0]))

    return run_weights("naive", log_weights, x, k, batch_size, particle_chunk, layout, progress,
                       return_log_weights, t0, seed, index_offset, compile)


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
    compile: bool | str = "auto",
) -> MarginalLikelihoodResult:
    r"""Importance sampling estimate of :math:`\log p(x)` per data point, the guide as proposal.

    .. math::

        \log \hat p(x) = \log \frac{1}{K} \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k \mid x)},
        \qquad z_k \sim q(z \mid x), \qquad
        \mathbb{E}\big[\log \hat p(x)\big] = \mathcal{L}_K \le \mathcal{L}_{K+1} \le \log p(x):

    the importance-weighted bound :math:`\mathcal{L}_K` of Burda et al. [1]. :math:`K = 1` gives
    the ELBO, and ``log_weight_mean`` is the :math:`K`-sample estimate of the ELBO; with
    :math:`q = p(z \mid x)` every weight equals :math:`p(x)`. :math:`\log p(x, z)` sums the
    model's sample sites (latent and observed) replayed on the guide's samples,
    :math:`\log q(z \mid x)` the guide's latent sites, which must be the model's. The
    diagnostics ``ess`` [2] and ``pareto_k`` [3] tell whether the weights can be trusted. See
    the module docstring for conventions, chunking and diagnostics.

    :param model: a Pyro model ``model(x)`` with the data points of ``x`` in a vectorized plate.
    :param guide: a Pyro guide ``guide(x)`` with the same latent sites.
    :param torch.Tensor x: the data, points along dimension 0.
    :param int num_samples: :math:`K`, guide samples per data point.
    :param batch_size: data points per chunk. Default: enough for about 2**25 floats per tensor
        of ``particle_chunk`` samples (not used with a ``seed``).
    :type batch_size: int or None
    :param particle_chunk: samples per chunk (with a ``seed``, default 1000 and part of the
        definition of the random streams).
    :type particle_chunk: int or None
    :param max_plate_nesting: the model's plate depth; default: read from a probe trace.
    :type max_plate_nesting: int or None
    :param int data_dim: the batch dimension of the data plate. Default -1.
    :param bool progress: show a progress bar (on stderr). Default False.
    :param bool return_log_weights: also return the ``(N, K)`` log weights in
        ``result.log_weights``. Default False.
    :param seed: if given, point :math:`i`'s samples are a function of (``seed``,
        ``index_offset + i``, :math:`K`, ``particle_chunk``) alone, whatever the batch size and
        however the points are split across workers
        (:func:`~ppl_vae.marginal.common.run_weights`); default: the global RNG.
    :type seed: int or None
    :param int index_offset: the global index of ``x[0]`` (for ``seed``). Default 0.
    :param whole_data: ``True``: call the pair on all of ``x`` at once (a guide with one
        parameter per data point; :func:`~ppl_vae.marginal.model_evidence`); ``None``
        (default): detected by the probe; ``False``: never.
    :type whole_data: bool or None
    :param compile: run the log weights of whole blocks as one recorded and compiled tensor
        program (:class:`~ppl_vae.marginal.common.CompiledLogWeights`: the same random draws,
        the arithmetic fused by Inductor); ``"auto"`` (default): when N x K is at least
        :data:`~ppl_vae.marginal.common.COMPILE_MIN_ROWS`. A pair that cannot be recorded runs
        generic with one warning. ``result.info`` then holds ``compiled``,
        ``compile_seconds`` and ``compile_notice``.
    :type compile: bool or str
    :returns: per-point ``log_likelihood``, ``stderr``, ``ess``, ``pareto_k``,
        ``log_weight_mean`` and ``log_weight_var`` (shape ``(N,)``), ``estimator="is"``.
    :rtype: ~ppl_vae.marginal.result.MarginalLikelihoodResult

    Example::

        import torch
        from ppl_vae.guides import DiagonalNormalGuide
        from ppl_vae.marginal import importance_sampling
        from ppl_vae.models import VAEModel

        model = VAEModel(x_dim=20, latent_dim=2, hidden=(16,))
        guide = DiagonalNormalGuide(x_dim=20, latent_dim=2, hidden=(16,))
        x = torch.rand(5, 20).bernoulli()
        result = importance_sampling(model, guide, x, num_samples=100, seed=0)
        assert (result.log_weight_mean <= result.log_likelihood).all()  # ELBO <= L_K

    **References**

    [1] Y. Burda, R. Grosse, R. Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.

    [2] A. Kong, *A Note on Importance Sampling using Standardized Weights*, Technical Report
    348, Department of Statistics, University of Chicago, 1992.

    [3] A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry, *Pareto Smoothed Importance
    Sampling*, JMLR 25, 2024.
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

    def log_weights(xb, kc, rows=None):
        if rows is not None:
            return rows_log_weights(model, guide, xb, kc, layout, rows)
        lw = importance_log_weights(model, guide, (xb,), {}, kc, layout.max_plate_nesting,
                                    layout.reduce, data_dim=layout.data_dim)
        return torch.broadcast_to(lw, (kc, xb.shape[0]))

    return run_weights("is", log_weights, x, k, batch_size, particle_chunk, layout, progress,
                       return_log_weights, t0, seed, index_offset, compile)


