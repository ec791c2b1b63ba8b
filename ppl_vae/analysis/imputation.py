"""How well a trained pair fills in missing pixels, against simple baselines.

:func:`evaluate_imputation` runs :func:`ppl_vae.marginal.imputation.impute` (importance
resampling with the guide) and scores its conditional mean E[x_miss | x_obs] on the missing
pixels against two baselines: the per-pixel training mean ("mean fill") and the pseudo-Gibbs
iteration of Rezende et al. (2014) (:func:`ppl_vae.analysis.generation.impute`). For binary data
it also gives the conditional log-likelihood of the independent per-pixel-mean Bernoulli
baseline, to set beside the VAE's log p̂(x_miss | x_obs). :func:`imputation_figure` draws the
comparison ``ppl-vae impute`` writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ppl_vae.analysis.generation import impute_pseudo_gibbs as pseudo_gibbs
from ppl_vae.marginal.imputation import ImputationResult, impute

__all__ = ["ImputationEvaluation", "evaluate_imputation", "missing_pixel_error",
           "mean_fill_log_likelihood", "imputation_figure"]


def missing_pixel_error(prediction: torch.Tensor, x: torch.Tensor,
                        observed: torch.Tensor) -> float:
    """Mean squared error of ``prediction`` on the pixels of ``x`` where ``observed`` is False."""
    return float(((prediction - x) ** 2)[~observed.bool()].mean())


def mean_fill_log_likelihood(x: torch.Tensor, observed: torch.Tensor,
                             pixel_mean: torch.Tensor, eps: float = 1e-3) -> float:
    """log p(x_miss | x_obs) per data point (nats, averaged over points) of the independent
    Bernoulli baseline whose pixel probabilities are ``pixel_mean`` (clamped to [eps, 1 - eps]);
    ``x`` binary."""
    p = pixel_mean.clamp(eps, 1 - eps).expand_as(x)
    ll = torch.where(x > 0.5, p.log(), (1 - p).log())
    return float((ll * ~observed.bool()).sum(-1).mean())


@dataclass
class ImputationEvaluation:
    """``result``: the importance-resampling imputation; ``mean_fill``: x with its missing pixels
    at the per-pixel training mean; ``pseudo_gibbs``: the pseudo-Gibbs completion; the errors
    are mean squared errors on the missing pixels; ``baseline_log_likelihood`` is ``None``
    unless the likelihood is binary."""

    result: ImputationResult
    mean_fill: torch.Tensor
    pseudo_gibbs: torch.Tensor
    missing_fraction: float
    vae_error: float
    baseline_error: float
    pseudo_gibbs_error: float
    baseline_log_likelihood: float | None

    def summary(self) -> dict:
        """The figures as one flat dict (log-likelihoods in nats per data point)."""
        ll, n = self.result.log_likelihood, self.result.log_likelihood.shape[0]
        return {
            "method": self.result.method, "n": n, "samples": self.result.num_samples,
            "missing_fraction": self.missing_fraction, "vae_error": self.vae_error,
            "baseline_error": self.baseline_error, "pseudo_gibbs_error": self.pseudo_gibbs_error,
            "vae_log_likelihood": float(ll.mean()),
            "vae_log_likelihood_stderr": float(ll.std() / math.sqrt(n)) if n > 1 else None,
            "baseline_log_likelihood": self.baseline_log_likelihood,
            "ess_mean": float(self.result.ess.mean()), "ess_min": float(self.result.ess.min()),
        }


def evaluate_imputation(model, guide, x: torch.Tensor, observed: torch.Tensor,
                        pixel_mean: torch.Tensor, num_samples: int = 1000, *,
                        pseudo_gibbs_iterations: int = 20, seed: int | None = None,
                        binary: bool | None = None) -> ImputationEvaluation:
    """Impute the pixels of ``x`` where ``observed`` is False and score the result.

    ``pixel_mean`` (D,): the per-pixel training mean, used as the guide's fill-in for the missing
    pixels and as the mean-fill baseline. ``seed``: torch's seed for the pseudo-Gibbs baseline
    (set after the importance resampling, which uses the current RNG state). ``binary``: whether
    to compute the Bernoulli baseline's log-likelihood (default: the model's
    ``likelihood.binary``, where it has one)."""
    observed = torch.as_tensor(observed, dtype=torch.bool, device=x.device).expand_as(x)
    res = impute(model, guide, x, observed, num_samples, fill=pixel_mean)
    mean_fill = torch.where(observed, x, pixel_mean)
    if seed is not None:
        torch.manual_seed(seed)
    pg = pseudo_gibbs(model, guide, x, observed, iterations=pseudo_gibbs_iterations)
    if binary is None:
        binary = bool(getattr(getattr(model, "likelihood", None), "binary", False))
    return ImputationEvaluation(
        result=res, mean_fill=mean_fill, pseudo_gibbs=pg,
        missing_fraction=float((~observed).float().mean()),
        vae_error=missing_pixel_error(res.mean, x, observed),
        baseline_error=missing_pixel_error(mean_fill, x, observed),
        pseudo_gibbs_error=missing_pixel_error(pg, x, observed),
        baseline_log_likelihood=mean_fill_log_likelihood(x, observed, pixel_mean)
        if binary else None)


def imputation_figure(model, guide, evaluation: ImputationEvaluation, x: torch.Tensor,
                      observed: torch.Tensor, pixel_mean: torch.Tensor, image_shape, path, *,
                      num: int = 8, draws: int = 3, title: str | None = None):
    """One PNG, a column per example (the first ``num``): the data, the observed pixels (missing
    ones grey), E[x_miss | x_obs], ``draws`` draws of x_miss | x_obs (the evaluation's own,
    then ``draws - 1`` fresh importance resamplings) and the mean fill. Returns the path."""
    from ppl_vae.io.plots import save_image_grid

    observed = torch.as_tensor(observed, dtype=torch.bool, device=x.device).expand_as(x)
    m = min(int(num), x.shape[0])
    res = evaluation.result
    shown_obs = torch.where(observed[:m], x[:m], torch.full_like(x[:m], 0.5))
    samples = [res.samples[:m]]
    for _ in range(draws - 1):
        samples.append(impute(model, guide, x[:m], observed[:m], res.num_samples,
                                         fill=pixel_mean).samples)
    rows = [x[:m], shown_obs, res.mean[:m], *samples, evaluation.mean_fill[:m]]
    labels = ["data", "observed", "E[x_miss|x_obs]",
              *[f"draw {i + 1}" for i in range(len(samples))], "mean fill"]
    return save_image_grid(torch.cat(rows).cpu(), image_shape, path, ncol=m, row_labels=labels,
                           title=title)
