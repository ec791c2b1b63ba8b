"""Convergence of gradient estimators: same model, same initial weights, same seed, same budget.

:func:`compare_estimators` builds one model/guide pair (a family registered in
:mod:`ppl_vae.training.builders`, e.g. ``vae`` or ``sbn``), keeps its initial weights, and for every
objective (each defines a gradient estimator)

1. measures the gradient statistics of :mod:`ppl_vae.analysis.gradient_variance` at those
   common initial weights (total variance, SNR, cosine to and bias against the reference
   ``trace`` or ``score-avg``, seconds per gradient) on the first minibatch;
2. trains a copy from the same initial weights with :class:`ppl_vae.infer.svi.SVI` (one fused Adam),
   the same seed and the same sequence of minibatches, for ``steps`` steps;
3. records, every ``eval_every`` steps, the standard ELBO E_q[log p(x,z) - log q(z|x)] per data
   point on a fixed evaluation set (one sample per point, fixed seed, RNG state restored so that
   evaluation never perturbs training) — comparable across estimators whatever each one
   optimizes — against steps and against training wall-clock seconds (evaluation and the first
   step's one-time setup excluded);
4. at the end, estimates log p(x) on the evaluation set by importance sampling with the guide as
   proposal, K samples (:func:`ppl_vae.marginal.importance_sampling`; Burda et al. 2016).

Results come back as one *tidy* :class:`pandas.DataFrame` (a row per objective, step and
metric: ``objective, step, seconds, metric, value``; metrics ``elbo``, ``train_objective``,
``is_log_likelihood`` and the gradient statistics at step 0) plus a wide summary;
:func:`plot_comparison` draws the variance per estimator (log scale) and the ELBO against steps
and against seconds. Wall-clock numbers are only comparable within one run on one idle machine.

Inside a ``torch.distributed`` process group the objectives are dealt round-robin over the ranks;
each rank runs the same per-objective steps (gradient statistics, :func:`_train_one`) from the
same initial weights and seed, and the rows are gathered in the order of ``objectives``: the
result is the sequential one (timings aside).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyro
import torch
from tqdm.auto import tqdm

from ppl_vae.analysis.gradient_variance import gradient_statistics
from ppl_vae.errors import ConfigError
from ppl_vae.infer.objectives import make_objective, parse_objective_list
from ppl_vae.infer.svi import SVI
from ppl_vae.training import distributed
from ppl_vae.training.loop import estimate_elbo

__all__ = ["ComparisonResult", "compare_estimators", "plot_comparison", "summary_table"]

GRADIENT_METRICS = ("total_variance", "variance_decoder", "variance_encoder", "snr_median",
                    "cosine_to_reference", "bias_norm", "bias_z_max", "bias_z_threshold",
                    "seconds_per_gradient")
GRADIENT_LABELS = ("reference", "target", "bias_detected")  # in the summary only: not numbers


@dataclass
class ComparisonResult:
    """``tidy``: long table (objective, step, seconds, metric, value); ``summary``: one row per
    objective; ``gradients``: the raw
    :func:`~ppl_vae.analysis.gradient_variance.gradient_statistics`
    output."""

    tidy: pd.DataFrame
    summary: pd.DataFrame
    gradients: dict


def _is_log_likelihood(model, guide, x, num_samples: int, seed: int) -> float:
    from ppl_vae.marginal import importance_sampling

    with torch.random.fork_rng(devices=[]):
        pyro.set_rng_seed(seed)
        return float(importance_sampling(model, guide, x, num_samples).log_likelihood.mean())


def build_pair(family: str, x_dim: int, latent_dim: int, hidden: Sequence[int],
               activation: str = "relu"):
    """A fresh model/guide pair of the registered ``family``
    (see :mod:`ppl_vae.training.builders`)."""
    from ppl_vae.training.builders import build_model_and_guide
    from ppl_vae.training.config import TrainConfig

    config = TrainConfig(model=family, latent_dims=(int(latent_dim),), hidden=tuple(hidden),
                         activation=activation, objective="tracegraph")
    return build_model_and_guide(config, x_dim)


def _minibatches(n: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """The index sequence shared by every objective: fresh permutations, epoch after epoch."""
    gen = torch.Generator().manual_seed(seed)
    per_epoch = max(1, n // batch_size)
    batches = []
    for _ in range(math.ceil(steps / per_epoch)):
        perm = torch.randperm(n, generator=gen)
        batches += [perm[i * batch_size: (i + 1) * batch_size] for i in range(per_epoch)]
    return batches[:steps]


def _train_one(name, model, guide, train_x, eval_x, batches, *, lr, seed, num_particles,
               eval_every, is_samples, bar) -> tuple[list[dict], dict]:
    """Train one copy with the objective ``name``; ``(tidy rows, summary row)``."""
    n = int(train_x.shape[0])
    pyro.set_rng_seed(seed)
    objective = make_objective(name, num_particles=num_particles, x_dim=int(train_x.shape[1]))
    svi = SVI(model, guide, objective, lr=lr)
    rows: list[dict] = []
    seconds, running, count, diverged, step = 0.0, 0.0, 0, False, 0

    def record(step):
        elbo = estimate_elbo(model, guide, eval_x, seed=seed + 1)
        rows.append({"objective": name, "step": step, "seconds": seconds, "metric": "elbo",
                     "value": elbo})
        if count:
            rows.append({"objective": name, "step": step, "seconds": seconds,
                         "metric": "train_objective", "value": -running / count})
        return elbo

    final_elbo = record(0)
    for step, idx in enumerate(batches, start=1):
        t0 = time.perf_counter()
        loss = svi.step(train_x[idx], num_data=n)
        if step > 1:  # the first step's one-time costs (parameter discovery, first calls)
            seconds += time.perf_counter() - t0
        bar.update(1)
        if not math.isfinite(loss):
            diverged = True
            break
        running, count = running + loss / n, count + 1
        if step % eval_every == 0 or step == len(batches):
            final_elbo = record(step)
            running, count = 0.0, 0
    is_ll = _is_log_likelihood(model, guide, eval_x, is_samples, seed + 2)
    rows.append({"objective": name, "step": step, "seconds": seconds,
                 "metric": "is_log_likelihood", "value": is_ll})
    summary = {"objective": name, "applicable": True, "diverged": diverged, "steps": step,
               "seconds": seconds, "seconds_per_step": seconds / max(step, 1),
               "final_elbo": final_elbo, "is_log_likelihood": is_ll}
    return rows, summary


def compare_estimators(
    train_x: torch.Tensor,
    eval_x: torch.Tensor,
    objectives: Sequence[str],
    *,
    model_family: str = "vae",
    latent_dim: int = 10,
    hidden: Sequence[int] = (200,),
    activation: str = "relu",
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    num_particles: int | None = None,
    eval_every: int | None = None,
    is_samples: int = 100,
    draws: int = 50,
    warmup: int | None = None,
    pair=None,
    progress: bool = False,
    device=None,
) -> ComparisonResult:
    """Train one copy per objective from common initial weights; see the module docstring.

    ``draws`` / ``warmup``: gradient draws and baseline warm-up draws for the statistics at the
    initial weights (see :func:`~ppl_vae.analysis.gradient_variance.gradient_statistics`).
    ``pair``: an optional ``(model, guide)`` to use instead of building ``model_family``.
    ``device``: where the built pair lives (the data must already be there).
    Objectives whose ELBO cannot infer discrete latents are skipped (reported as not
    applicable) on a model with discrete latents.
    """
    objectives = parse_objective_list(objectives)
    steps, batch_size = int(steps), int(batch_size)
    if steps < 1 or batch_size < 1:
        raise ConfigError("steps and batch_size must be >= 1")
    n = int(train_x.shape[0])
    batches = _minibatches(n, min(batch_size, n), steps, seed)
    pyro.set_rng_seed(seed)
    if pair is None:
        pair = build_pair(model_family, train_x.shape[1], latent_dim, hidden, activation)
    model0, guide0 = pair
    if device is not None:
        model0.to(device), guide0.to(device)
    distributed.broadcast_modules(model0, guide0)  # every rank starts from rank 0's weights
    mine = distributed.my_items(objectives)  # all of them in a single process
    grads = gradient_statistics(model0, guide0, train_x[batches[0]], mine, draws=draws,
                                num_data=n, seed=seed, num_particles=num_particles,
                                warmup=warmup, warmup_data=train_x) if mine else {}
    bar = tqdm(total=steps * len(mine), disable=not (progress and distributed.is_main()),
               desc="compare", unit="step", dynamic_ncols=True)
    done = {}
    with bar:
        for name in mine:
            bar.set_postfix_str(name)
            done[name] = _compare_one(name, grads[name], model0, guide0, train_x, eval_x,
                                      batches, bar, lr=lr, seed=seed, num_particles=num_particles,
                                      eval_every=int(eval_every or max(1, steps // 20)),
                                      is_samples=is_samples)
    for part_done, part_grads in distributed.gather((done, grads)):
        done.update(part_done), grads.update(part_grads)
    rows = [row for name in objectives for row in done[name][0]]
    tidy = pd.DataFrame(rows, columns=["objective", "step", "seconds", "metric", "value"])
    summary = pd.DataFrame([done[name][1] for name in objectives])
    return ComparisonResult(tidy, summary, {name: grads[name] for name in objectives})


def _compare_one(name, g, model0, guide0, train_x, eval_x, batches, bar, **train_args):
    """``(tidy rows, summary row)`` of one objective: its gradient statistics ``g`` at the
    common initial weights, then a copy of the pair trained with it (:func:`_train_one`)."""
    if not g["applicable"]:
        bar.update(len(batches))
        return [], {"objective": name, "applicable": False}
    rows = [{"objective": name, "step": 0, "seconds": 0.0, "metric": m, "value": g[m]}
            for m in GRADIENT_METRICS if g.get(m) is not None]
    more, row = _train_one(name, copy.deepcopy(model0), copy.deepcopy(guide0), train_x, eval_x,
                           batches, bar=bar, **train_args)
    return rows + more, {**row, **{m: g.get(m) for m in (*GRADIENT_METRICS, *GRADIENT_LABELS)}}


def summary_table(summary: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A markdown table of the summary (no extra dependency: pandas' to_markdown needs one)."""
    cols = [c for c in ("objective", "total_variance", "variance_encoder", "variance_decoder",
                        "snr_median", "cosine_to_reference", "bias_z_max", "bias_detected",
                        "seconds_per_gradient", "final_elbo", "is_log_likelihood",
                        "seconds_per_step") if c in summary.columns]

    def fmt(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in summary.iterrows():
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(result: ComparisonResult, out_dir, title: str = "") -> list[Path]:
    """``variance.png`` (total and per-group variance per estimator, log scale),
    ``elbo_vs_steps.png`` and ``elbo_vs_seconds.png``. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ppl_vae.io.plots import save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tidy = result.tidy
    paths = []

    var = tidy[tidy.metric.isin(["variance_encoder", "variance_decoder", "total_variance"])]
    table = var.pivot_table(index="objective", columns="metric", values="value", sort=False)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(table) + 2), 4))
    xs = np.arange(len(table))
    for i, (metric, label) in enumerate([("total_variance", "total"),
                                         ("variance_encoder", "encoder (guide)"),
                                         ("variance_decoder", "decoder (model)")]):
        if metric in table:
            ax.bar(xs + (i - 1) * 0.27, table[metric].to_numpy(), width=0.27, label=label)
    ax.set_yscale("log")
    ax.set_xticks(xs, table.index, rotation=30, ha="right")
    ax.set_ylabel("trace of gradient covariance")
    ax.set_title(("Gradient variance at the common initial weights" + (f" — {title}" if title
                                                                        else "")))
    ax.legend()
    paths.append(save_figure(fig, out_dir / "variance.png"))

    elbo = tidy[tidy.metric == "elbo"]
    for xcol, fname, xlabel in (("step", "elbo_vs_steps.png", "SVI steps"),
                                ("seconds", "elbo_vs_seconds.png", "training seconds")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, group in elbo.groupby("objective", sort=False):
            ax.plot(group[xcol], group["value"], label=name, marker=".", markersize=3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ELBO per data point (eval set, nats)")
        ax.set_title(f"ELBO vs {xlabel}" + (f" — {title}" if title else ""))
        lo = elbo["value"].quantile(0.05) if len(elbo) else None
        if lo is not None and math.isfinite(lo):
            ax.set_ylim(bottom=lo)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        paths.append(save_figure(fig, out_dir / fname))
    return paths
