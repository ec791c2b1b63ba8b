"""The result of a marginal-likelihood estimator: per-point estimates and diagnostics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch


# ------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------
@dataclass(repr=False)
class MarginalLikelihoodResult:
    """Per-data-point estimates of log p(x) and their diagnostics (all tensors float64, CPU).

    ``log_likelihood``, ``stderr``, ``ess``, ``pareto_k``, ``log_weight_mean`` and
    ``log_weight_var`` have shape ``(N,)``; ``log_weights`` is ``(N, K)`` when requested.
    ``num_dims`` is the number of values per data point D (for bits/dim); ``info`` holds
    estimator-specific extras (AIS: ``acceptance_rate`` and final ``step_size`` per point, the
    schedule, ...). :meth:`summary` gives data-set-level numbers.
    """

    estimator: str
    num_samples: int
    num_dims: int
    log_likelihood: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    pareto_k: torch.Tensor
    log_weight_mean: torch.Tensor
    log_weight_var: torch.Tensor
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    log_weights: torch.Tensor | None = None

    PARETO_K_THRESHOLD: ClassVar[float] = 0.7

    @property
    def n(self) -> int:
        return int(self.log_likelihood.shape[0])

    @property
    def unreliable(self) -> torch.Tensor:
        """Boolean ``(N,)``: k̂ > 0.7, the estimate for that point should not be trusted."""
        return self.pareto_k > self.PARETO_K_THRESHOLD

    @property
    def bits_per_dim(self) -> torch.Tensor:
        """-log p(x) / (D ln 2) per data point."""
        return -self.log_likelihood / (self.num_dims * math.log(2.0))

    def summary(self) -> dict:
        """Data-set-level numbers (plain Python floats; NaN where undefined).

        ``log_likelihood`` is the mean over points; ``stderr`` the standard error of that mean
        over data points (sd / sqrt(n), which includes the Monte Carlo noise of each point);
        ``mc_stderr`` the Monte Carlo error alone, sqrt(Σ_n se_n²) / n.
        """
        ll = self.log_likelihood
        n = self.n
        out = {
            "estimator": self.estimator,
            "num_samples": int(self.num_samples),
            "n": n,
            "num_dims": int(self.num_dims),
            "log_likelihood": _f(ll.mean()),
            "stderr": _f(ll.std() / math.sqrt(n)) if n > 1 else math.nan,
            "mc_stderr": _f(self.stderr.pow(2).sum().sqrt() / n),
            "bits_per_dim": _f(self.bits_per_dim.mean()),
            "ess_mean": _f(self.ess.mean()),
            "ess_min": _f(self.ess.min()),
            "pareto_k_max": _nanmax(self.pareto_k),
            "pareto_k_mean": _f(self.pareto_k.nanmean()) if n else math.nan,
            "num_unreliable": int(self.unreliable.sum()),
            "pareto_k_threshold": self.PARETO_K_THRESHOLD,
            "log_weight_var_mean": _f(self.log_weight_var.mean()),
            "seconds": float(self.seconds),
        }
        for key, value in self.info.items():
            if isinstance(value, torch.Tensor):
                out[key] = _f(value.double().nanmean())
            else:
                out[key] = value
        return out

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"MarginalLikelihoodResult(estimator={self.estimator!r}, n={s['n']}, "
            f"K={s['num_samples']}, log_likelihood={s['log_likelihood']:.4f} "
            f"± {s['stderr']:.4f} nats, bits_per_dim={s['bits_per_dim']:.4f}, "
            f"ess_mean={s['ess_mean']:.1f}, pareto_k_max={s['pareto_k_max']:.2f}, "
            f"num_unreliable={s['num_unreliable']}, seconds={s['seconds']:.2f})"
        )


def _f(t) -> float:
    return float(t)


def _nanmax(t: torch.Tensor) -> float:
    t = t[~torch.isnan(t)]
    return float(t.max()) if t.numel() else math.nan




PER_POINT = ("log_likelihood", "stderr", "ess", "pareto_k", "log_weight_mean", "log_weight_var")


def concat_results(parts) -> MarginalLikelihoodResult:
    """One result for the data points of ``parts`` (results on consecutive shards), in order.

    Per-point tensors, ``log_weights`` and per-point tensors of ``info`` (first dimension the
    part's number of points) are concatenated; other ``info`` values come from the first part;
    ``seconds`` is the largest (the parts ran side by side). ``None`` parts (empty shards) are
    skipped.
    """
    parts = [p for p in parts if p is not None]
    if not parts:
        raise ValueError("concat_results needs at least one result")
    first = parts[0]
    if len(parts) == 1:
        return first
    cat = {name: torch.cat([getattr(p, name) for p in parts]) for name in PER_POINT}
    info = {}
    for key, value in first.info.items():
        per_point = all(isinstance(p.info.get(key), torch.Tensor) and p.info[key].dim() > 0
                        and p.info[key].shape[0] == p.n for p in parts)
        info[key] = torch.cat([p.info[key] for p in parts]) if per_point else value
    log_weights = (torch.cat([p.log_weights for p in parts])
                   if all(p.log_weights is not None for p in parts) else None)
    return replace(first, **cat, info=info, log_weights=log_weights,
                   seconds=max(p.seconds for p in parts))
