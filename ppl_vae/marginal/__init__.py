r"""Marginal likelihood log p(x) = log ∫ p(x|z) p(z) dz of any Pyro model/guide pair.

Three estimators, each returning one estimate per data point (a
:class:`MarginalLikelihoodResult` with ``log_likelihood`` of shape ``(N,)`` plus diagnostics):

:func:`naive_monte_carlo`
    z_k ~ p(z), log p̂(x) = log (1/K) Σ_k p(x | z_k). Unbiased for p(x), but its variance
    explodes when the posterior is much narrower than the prior (high-dimensional x): log p̂ is
    then far *below* log p(x) (Jensen), and the weights are dominated by one sample.
:func:`importance_sampling`
    z_k ~ q(z|x), log p̂(x) = log (1/K) Σ_k p(x, z_k) / q(z_k|x): the importance-weighted bound
    L_K of Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders". E[L_K] ≤
    log p(x), L_1 = ELBO, L_K increases with K and tends to log p(x). With q = p(z|x) every weight
    equals p(x) and the estimate is exact.
:func:`annealed_importance_sampling`
    AIS (Neal 2001, "Annealed importance sampling", Statistics and Computing 11) along the
    geometric path f_t(z) = q(z)^(1-β_t) p(x, z)^(β_t), 0 = β_0 < ... < β_T = 1, from the guide
    q(z|x) (or the prior) to the unnormalized posterior, with Hamiltonian Monte Carlo
    transitions whose step size is adapted towards an acceptance rate of 0.65 — the evaluation
    protocol of Wu, Burda, Salakhutdinov & Grosse (2017), "On the Quantitative Analysis of
    Decoder-Based Generative Models". Each chain's log weight is
    Σ_{t=1}^T (β_t - β_{t-1}) [log p(x, z_{t-1}) - log q(z_{t-1})], an unbiased estimate of
    p(x) (so log of the chain average is again a stochastic lower bound).

Diagnostics (per data point, from the K log weights log w_k):

* ``ess``: effective sample size 1 / Σ_k w̃_k² of the normalized weights w̃_k = w_k / Σ_j w_j
  (Kong 1992); between 1 and K.
* ``pareto_k``: the shape k̂ of a generalized Pareto distribution fitted to the largest weights,
  via :func:`arviz.psislw` (Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto smoothed importance
  sampling", JMLR 2024). k̂ > 0.7 (:attr:`MarginalLikelihoodResult.PARETO_K_THRESHOLD`) means the
  weights' variance is (practically) infinite and the estimate is unreliable whatever the ESS
  says (``unreliable``). k̂ is NaN when it cannot be fitted: K < 21 (fewer than 5 tail samples),
  or ties among the largest weights (a discrete latent, or an exact guide with equal weights).
* ``stderr``: the delta-method standard error of log p̂: sd(w) / (sqrt(K) mean(w)), computed
  with the weights scaled by their maximum (NaN for K = 1). Only meaningful when k̂ ≤ 0.7.
* ``log_weight_mean`` / ``log_weight_var``: mean and variance of the log weights (for
  importance sampling the mean is the K-sample estimate of the ELBO; for AIS the variance across
  chains is the usual AIS diagnostic).

Conventions for model/guide pairs. ``model(x)`` and ``guide(x)`` are Pyro callables that put the
data points — the first dimension of ``x`` — in a vectorized ``pyro.plate``; ``model`` observes
``x`` (any number of observed sites). Latent sites are the model's non-observed sample sites,
whatever their names, number and event shapes; the guide must have exactly the same latent sites.
The *data plate* is assumed to be the rightmost batch dimension (``data_dim=-1``; pass another
``data_dim`` if your data plate is elsewhere); log densities are summed over every other plate.
The K samples are drawn in one vectorized call through an extra ``pyro.plate`` at dimension
``-(max_plate_nesting + 1)``, left of all the model's plates, so the model must broadcast over
extra leading batch dimensions (the usual requirement of ``vectorize_particles=True`` in Pyro).
``max_plate_nesting`` is read from a probe trace unless given. The data plate may have a size
or none (``pyro.plate("data")``). Every latent site must be inside the data plate (one latent
set per data point): a global latent makes log p(x_n) non-separable, and
:func:`model_evidence` estimates log p(X) of the whole data set instead. A pair that runs only
on all of ``x`` at once (a guide with one parameter per data point, a fixed-size data plate) is
detected by the probe and called on all of ``x``.
Each site's ``log_prob`` includes the site's scale and mask (Pyro semantics), so call the model
without minibatch rescaling (no ``num_data``).

Random streams: by default the samples come from the global RNG (``pyro.set_rng_seed``). With
``seed=S`` each point's samples are a function of (S, its global index ``index_offset + i``, K)
alone: the points are processed in blocks of consecutive global indices, each block seeded from
(S, block) (:func:`~ppl_vae.marginal.common.run_weights`), so a point's estimate is the same
whatever the batch size and however the points are split across workers (``ppl-vae evaluate``
always passes ``--seed``). A block that runs past an end of ``x`` draws its latents for the whole
block (the same random numbers) and runs the model — the work per sample — on its real rows only
(naive MC and importance sampling; AIS pads such a block). The per-point values then agree
with those of whole blocks bit for bit as long as the backend's matrix products give each row
the same result whatever the number of rows (true of MKL on CPU in the tests); AIS with a seed
runs blocks of at most 64 points (:func:`~ppl_vae.marginal.common.point_block`).

Memory and precision: the work is split into chunks of ``batch_size`` data points times
``particle_chunk`` samples, so peak memory depends on the chunk sizes, not on N or K; the
defaults keep each chunk near 2**25 floats per tensor for importance sampling (2**22 for AIS,
which also keeps an autograd graph). Each point's K log weights are kept in float64 and combined
with log-sum-exp. Model and guide are called as ``model(x_chunk)`` / ``guide(x_chunk)`` on chunks of
points, except for the whole-data pairs above.
All of this runs under ``torch.no_grad()`` except AIS's gradients with respect to z.
"""

from dataclasses import replace

from ppl_vae.errors import ConfigError
from ppl_vae.marginal.ais import annealed_importance_sampling
from ppl_vae.marginal.bdmc import bidirectional_monte_carlo
from ppl_vae.marginal.evidence import model_evidence
from ppl_vae.marginal.importance import importance_sampling, naive_monte_carlo
from ppl_vae.marginal.result import MarginalLikelihoodResult

__all__ = [
    "ESTIMATORS",
    "MarginalLikelihoodResult",
    "annealed_importance_sampling",
    "bidirectional_monte_carlo",
    "estimate_log_likelihood",
    "importance_sampling",
    "model_evidence",
    "naive_monte_carlo",
]

#: The marginal-likelihood estimators of :func:`estimate_log_likelihood` (``ppl-vae evaluate``).
ESTIMATORS = {
    "elbo": "the mean of K log weights log p(x,z)/q(z|x), z ~ q: the K-sample ELBO estimate",
    "naive": "naive Monte Carlo with the prior as proposal",
    "is": "importance sampling with the guide as proposal (the IWAE bound L_K)",
    "ais": "annealed importance sampling with HMC transitions; K = number of chains",
}


def estimate_log_likelihood(model, guide, x, estimator: str, num_samples: int,
                            **options) -> MarginalLikelihoodResult:
    r"""Run the marginal-likelihood estimator named ``estimator`` on every data point of ``x``.

    With :math:`K` = ``num_samples`` and :math:`w_k = p(x, z_k) / q(z_k \mid x)`,
    :math:`z_k \sim q(z \mid x)`, the estimators (the keys of :data:`ESTIMATORS`) are

    .. math::

        \texttt{elbo}: \ \frac{1}{K} \sum_{k=1}^K \log w_k, \qquad
        \texttt{is}: \ \log \frac{1}{K} \sum_{k=1}^K w_k \ [1], \qquad
        \texttt{naive}: \ \log \frac{1}{K} \sum_{k=1}^K p(x \mid z'_k),
        \ z'_k \sim p(z),

    and ``ais``, annealed importance sampling with :math:`K` HMC chains [2, 3]
    (:func:`annealed_importance_sampling`). ``elbo`` is importance sampling reported as the
    mean log weight, with per-point standard error :math:`\mathrm{sd}(\log w) / \sqrt{K}`.

    :param model: a Pyro model ``model(x)`` (see the module docstring for the conventions).
    :param guide: a Pyro guide ``guide(x)`` with the model's latent sites (not used by
        ``naive``; may be None there and for ``ais`` with ``init="prior"``).
    :param torch.Tensor x: the data, points along dimension 0.
    :param str estimator: ``"elbo"``, ``"naive"``, ``"is"`` or ``"ais"``.
    :param int num_samples: :math:`K`, samples (chains for ``ais``) per data point.
    :param options: keyword options of the estimator's function (``batch_size``,
        ``particle_chunk``, ``progress``, ``seed``, ...; for ``ais`` also ``num_steps``,
        default 1000, ``num_leapfrog``, ``step_size``, ``init``, ``schedule``).
    :returns: per-point estimates and diagnostics.
    :rtype: ~ppl_vae.marginal.result.MarginalLikelihoodResult
    :raises ConfigError: for an unknown ``estimator``.

    Example::

        import torch
        from ppl_vae.guides import DiagonalNormalGuide
        from ppl_vae.marginal import estimate_log_likelihood
        from ppl_vae.models import VAEModel

        model = VAEModel(x_dim=20, latent_dim=2, hidden=(16,))
        guide = DiagonalNormalGuide(x_dim=20, latent_dim=2, hidden=(16,))
        x = torch.rand(5, 20).bernoulli()
        result = estimate_log_likelihood(model, guide, x, "is", num_samples=100, seed=0)
        print(result.summary()["log_likelihood"])  # mean log p(x) over the 5 points

    **References**

    [1] Y. Burda, R. Grosse, R. Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.

    [2] R. M. Neal, *Annealed Importance Sampling*, Statistics and Computing 11, 2001.

    [3] Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse, *On the Quantitative Analysis of
    Decoder-Based Generative Models*, ICLR 2017.
    """
    if estimator == "naive":
        return naive_monte_carlo(model, x, num_samples, **options)
    if estimator in ("is", "elbo"):
        if estimator == "elbo" and options.get("progress"):
            options["progress"] = "elbo"  # the bar says what is estimated
        result = importance_sampling(model, guide, x, num_samples, **options)
        if estimator == "is":
            return result
        return replace(result, estimator="elbo", log_likelihood=result.log_weight_mean,
                       stderr=(result.log_weight_var / num_samples).sqrt())
    if estimator == "ais":
        num_steps = options.pop("num_steps", 1000)
        return annealed_importance_sampling(model, guide, x, num_samples, num_steps, **options)
    raise ConfigError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
