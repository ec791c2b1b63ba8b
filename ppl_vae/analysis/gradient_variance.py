"""Gradient-estimator statistics at fixed parameters: variance, SNR, bias, cost.

For an estimator g^ of the gradient of an objective (the ELBO, or L_K; the ascent direction,
i.e. minus what ``loss_and_grads`` leaves in ``.grad``) at fixed parameters (a checkpoint) we draw G
independent estimates g^_1..g^_G on the same minibatch x and report, with
mean m = (1/G) sum_i g^_i and per-coordinate variance v_d = 1/(G-1) sum_i (g^_id - m_d)^2:

``total_variance``
    tr Cov[g^] ~= sum_d v_d, also split into parameter groups: ``decoder`` (the model's
    parameters theta) and ``encoder`` (the guide's parameters phi);
``snr_median``
    the median over coordinates of the signal-to-noise ratio ``|m_d| / sqrt(v_d)`` (Rainforth et
    al. 2018, "Tighter Variational Bounds are Not Necessarily Better", eq. (4)), also per group;
    coordinates with zero mean and zero variance (no gradient at all) are left out;
``cosine_to_reference``
    cos(m, m_ref), the angle between this estimator's mean gradient and the reference's (``trace``,
    the reparameterized ELBO gradient, or ``score-avg`` where the guide has discrete latents):
    ~1 for any unbiased estimator of the same gradient (up to Monte Carlo error in the means: with
    few draws a high-variance estimator's mean is itself noisy), and systematically
    below 1 for estimators of a *different* objective's gradient (iwae-K, dreg-K, rws: the IWAE
    bound L_K). The reference's own row has no cosine (it would be 1 by construction);
``target``
    the objective whose gradient the estimator estimates, biased or not
    (:func:`~ppl_vae.infer.objectives.target_of`): ``ELBO``, ``L_5`` for ``iwae-5``,
    ``dreg-5`` and ``vimco-5``, ``L_5, wake-phi`` for ``rws-5``, ``wake-sleep`` for ``ws``;
``bias_norm``
    ``||m - m_ref|| / ||m_ref||``, the relative distance to the reference's mean gradient. It
    includes the Monte Carlo error of *both* means, so it is not zero for an unbiased estimator:
    compare it across estimators at the same G, or read ``bias_z_max``;
``bias_z_max``
    ``max_d |m_d - m_ref,d| / sqrt(v_d / G + v_ref,d / G)``, the largest per-coordinate
    difference of the two means in units of its standard error (the draws of the two
    estimators taken as independent); coordinates with zero standard error and zero difference
    are left out (zero standard error with a difference gives inf);
``bias_z_threshold``
    the noise level of ``bias_z_max``: the q with ``P(max_d |T_d| > q) <= 0.001``
    (:data:`BIAS_LEVEL`) for D Student-t variables with G - 1 degrees of freedom, D the number
    of coordinates kept, whatever their dependence (Bonferroni: the two-sided 0.001 / D
    quantile). G - 1 is the fewest degrees of freedom of Welch's statistic, so the level is
    conservative under normality; it is asymptotic for the heavy-tailed draws of score-function
    estimators, and assumes the two estimators' draws are independent (all objectives start
    from the same seed; draws that share random numbers and are positively correlated make it
    conservative, negatively correlated ones would not);
``bias_detected``
    ``bias_z_max > bias_z_threshold``: for an estimator with the reference's ``target``, a bias
    beyond its Monte Carlo noise (an unbiased one shows it with probability <= 0.001; False
    means none was resolved with G draws, not that there is none). None where the targets differ
    (the L_K estimators against an ELBO reference: their gradient is another objective's, and
    ``bias_norm`` / ``bias_z_max`` measure how far it is from the ELBO's, not a defect). The
    reference's own row has None in all four bias columns;
``seconds_per_gradient``
    mean wall-clock seconds of one estimate (one ``loss_and_grads`` call, the same code path as
    a training step, minus the optimizer update).

Draws are independent calls of the objective's own ``loss_and_grads``: Pyro's ELBOs call
``backward`` on one scalar surrogate, so G draws cannot be separated out of one batched backward
pass without re-implementing every estimator; the particles *within* a draw are vectorized, and
the statistics are accumulated over draws with vectorized (Welford) updates in float64.
Estimators with state (baselines) are warmed up first at the same parameters, for ``warmup``
draws on random minibatches of ``warmup_data`` (e.g. the training split) when given: the
decaying average updates itself, the neural baseline is also trained by Adam on its own loss.
During the measured draws both are frozen, so that the G draws are i.i.d. (left running on one
fixed minibatch, Pyro's per-position average would turn into a per-data-point baseline for that
minibatch, which it never is in training).
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyro
import torch
from pyro import poutine

from ppl_vae.errors import ConfigError
from ppl_vae.infer.baselines import AverageBaselineTraceGraph_ELBO
from ppl_vae.infer.objectives import (
    Objective,
    make_objective,
    objective_spec,
    parse_objective_list,
    target_of,
)
from ppl_vae.poutine.trace import latent_sites, latent_values, trainable_tensors

__all__ = [
    "GROUPS",
    "gradient_statistics",
    "run_gradient_statistics",
    "fixed_minibatch",
    "statistics_frame",
    "parameter_groups",
    "has_discrete_latents",
]

GROUPS = ("decoder", "encoder")
DEFAULT_WARMUP = 300
BIAS_LEVEL = 1e-3  # at most this probability that an unbiased estimator shows bias_detected
STAT_KEYS = (
    "total_variance",
    "variance_decoder",
    "variance_encoder",
    "snr_median",
    "snr_median_decoder",
    "snr_median_encoder",
    "cosine_to_reference",
    "reference",
    "target",
    "bias_norm",
    "bias_z_max",
    "bias_z_threshold",
    "bias_detected",
    "mean_gradient_norm",
    "seconds_per_gradient",
    "objective_value",
)


def _unique(tensors) -> list[torch.Tensor]:
    return list({id(t): t for t in tensors}.values())


def _depends_on(value: torch.Tensor, candidates) -> list[torch.Tensor]:
    """The candidates that ``value`` is a differentiable function of."""
    if not value.requires_grad:
        return []
    grads = torch.autograd.grad(value, candidates, allow_unused=True)
    return [t for t, g in zip(candidates, grads) if g is not None]


def parameter_groups(model, guide, x, **kwargs) -> dict[str, list[torch.Tensor]]:
    """The trainable tensors by role, found from the program, not from who declares them.

    ``"decoder"``: the tensors the model's log-density log p(x, z) depends on at latent values
    z ~ q(z|x) held fixed; ``"encoder"``: the tensors the guide's sampling distribution depends
    on (the gradient of log q(z|x) at the same fixed z). A tensor both use (a module shared by
    model and guide) belongs to both groups; one neither uses is in neither.
    """
    candidates = _unique([*trainable_tensors(model, x, **kwargs),
                          *trainable_tensors(guide, x, **kwargs)])
    if not candidates:
        return {"decoder": [], "encoder": []}
    with torch.random.fork_rng(devices=[]), torch.enable_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(x, **kwargs)
        z = latent_values(guide_trace)
        log_q = poutine.trace(poutine.condition(guide, data=z)).get_trace(
            x, **kwargs).log_prob_sum()
        log_p = poutine.trace(poutine.condition(model, data=z)).get_trace(
            x, **kwargs).log_prob_sum()
        encoder = {id(t) for t in _depends_on(log_q, candidates)}
        decoder = {id(t) for t in _depends_on(log_p, candidates)}
    return {"decoder": [t for t in candidates if id(t) in decoder],
            "encoder": [t for t in candidates if id(t) in encoder]}


def has_discrete_latents(guide, x, **kwargs) -> bool:
    """True if some latent sample site of ``guide(x)`` cannot be reparameterized."""
    with torch.no_grad():
        tr = poutine.trace(guide).get_trace(x, **kwargs)
    return any(not getattr(site["fn"], "has_rsample", False)
               for site in latent_sites(tr).values())


def _group_index(groups) -> tuple[list[torch.Tensor], dict]:
    """The tensors of all groups, each once, and each group's positions in their flat vector."""
    tensors = _unique([t for g in GROUPS for t in groups[g]])
    offsets, start = {}, 0
    for t in tensors:
        offsets[id(t)] = (start, start + t.numel())
        start += t.numel()
    index = {g: torch.cat([torch.arange(*offsets[id(t)]) for t in groups[g]])
             if groups[g] else torch.zeros(0, dtype=torch.long) for g in GROUPS}
    return tensors, index


class _Welford:
    """Running mean and sum of squared deviations of flat vectors, in float64."""

    def __init__(self, size: int):
        self.n = 0
        self.mean = torch.zeros(size, dtype=torch.float64)
        self.m2 = torch.zeros(size, dtype=torch.float64)

    def add(self, g: torch.Tensor) -> None:
        g = g.detach().to(device="cpu", dtype=torch.float64)
        self.n += 1
        delta = g - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (g - self.mean)

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / max(self.n - 1, 1)


def _flat_grad(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The parameters' gradients as one flat float64 CPU vector (zeros where none)."""
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p))
            .detach().reshape(-1).to(device="cpu", dtype=torch.float64)
            for p in params
        ]
    ) if params else torch.zeros(0, dtype=torch.float64)


def _zero_grad(params: Iterable[torch.Tensor]) -> None:
    for p in params:
        p.grad = None


def _is_stateful(objective: Objective) -> bool:
    return bool(objective.modules) or isinstance(objective.elbo, AverageBaselineTraceGraph_ELBO)


def _median_snr(mean: torch.Tensor, var: torch.Tensor) -> float:
    if mean.numel() == 0:
        return float("nan")
    keep = (mean != 0) | (var > 0)
    if not bool(keep.any()):
        return float("nan")
    snr = mean[keep].abs() / var[keep].sqrt()  # var == 0 with mean != 0 -> inf
    return float(snr.median())


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return float(a @ b) / (na * nb)


def _max_abs_t_level(dims: int, nu: int, level: float = BIAS_LEVEL) -> float:
    """q with ``P(max_d |T_d| > q) <= level`` for ``dims`` Student-t(``nu``) variables, however
    dependent (Bonferroni: the two-sided ``level / dims`` quantile)."""
    if dims < 1:
        return float("nan")
    from scipy.stats import t as student_t  # scipy: a dependency of arviz

    return float(student_t.isf(level / dims / 2, nu))


def _bias(acc: _Welford, ref: _Welford | None, same_target: bool) -> dict:
    """The bias columns of the mean gradient of ``acc`` against the reference's ``ref`` (see the
    module docstring); all None for the reference itself (``ref`` None)."""
    if ref is None:
        return {k: None for k in ("bias_norm", "bias_z_max", "bias_z_threshold",
                                  "bias_detected")}
    diff = acc.mean - ref.mean
    se = (acc.var / acc.n + ref.var / ref.n).sqrt()
    keep = (se > 0) | (diff != 0)  # zero s.e. with a difference: z = inf
    z = diff[keep].abs() / se[keep]
    ref_norm = float(ref.mean.norm())
    z_max = float(z.max()) if z.numel() else float("nan")
    threshold = _max_abs_t_level(int(keep.sum()), min(acc.n, ref.n) - 1)
    return {"bias_norm": float(diff.norm()) / ref_norm if ref_norm > 0 else float("nan"),
            "bias_z_max": z_max, "bias_z_threshold": threshold,
            "bias_detected": (z_max > threshold) if same_target and z.numel() else None}


def _measure(objective, model, guide, x, groups, draws, warmup, num_data, baseline_lr,
             seed, warmup_data=None, tick=lambda: None) -> dict:
    """Warm up the objective's state, then accumulate ``draws`` gradient estimates."""
    all_params, index = _group_index(groups)
    pyro.set_rng_seed(seed)
    step_kwargs = {} if num_data is None else {"num_data": num_data}

    modules = list(objective.modules.values())
    if warmup:
        optim = None
        gen = torch.Generator().manual_seed(seed)
        for _ in range(warmup):
            _zero_grad(all_params)
            for m in modules:
                m.zero_grad(set_to_none=True)
            xw = x
            if warmup_data is not None:
                xw = warmup_data[torch.randperm(warmup_data.shape[0], generator=gen)[: x.shape[0]]]
            objective.loss_and_grads(model, guide, xw, **step_kwargs)
            tick()
            if modules:
                if optim is None:  # lazy modules exist after the first call
                    module_params = [p for m in modules for p in m.parameters() if p.requires_grad]
                    if module_params:
                        optim = torch.optim.Adam(module_params, lr=baseline_lr)
                if optim is not None:
                    optim.step()
    module_params = [p for m in modules for p in m.parameters()]
    if isinstance(objective.elbo, AverageBaselineTraceGraph_ELBO):
        objective.elbo.frozen = True  # i.i.d. draws: one fixed baseline state

    # One untimed, unrecorded call first: first-call costs (lazy initialization, allocator
    # warm-up) would otherwise be charged to whichever estimator happens to run first.
    _zero_grad(all_params)
    objective.loss_and_grads(model, guide, x, **step_kwargs)
    acc = _Welford(sum(p.numel() for p in all_params))
    losses, seconds = [], 0.0
    for _ in range(draws):
        _zero_grad(all_params)
        _zero_grad(module_params)
        t0 = time.perf_counter()
        loss = objective.loss_and_grads(model, guide, x, **step_kwargs)
        seconds += time.perf_counter() - t0
        losses.append(float(loss))
        tick()
        # .grad holds the gradient of the loss -objective; record the objective's gradient.
        acc.add(-_flat_grad(all_params))
    _zero_grad(all_params)
    _zero_grad(module_params)
    return {"acc": acc, "index": index, "seconds": seconds / max(draws, 1),
            "objective": -float(np.mean(losses)) if losses else float("nan")}


def _objective_for(name, num_particles, options, x_dim, states):
    """``make_objective`` with the options this objective takes and its trained module states
    (a saved neural baseline) loaded."""
    spec = objective_spec(name)
    kw = {k: v for k, v in options.items() if k in spec.options}
    objective = make_objective(name, num_particles=num_particles, x_dim=x_dim, **kw)
    for module_name, state in (states or {}).get(name, {}).items():
        if module_name in objective.modules:
            objective.modules[module_name].load_state_dict(state)
    return objective


def _row(m: dict, draws: int, ref: dict | None, reference: str, is_reference: bool,
         keep_vectors: bool) -> dict:
    """The statistics of one measured objective against the measured reference ``ref`` (None
    where the reference does not apply; see the module docstring)."""
    acc, index = m["acc"], m["index"]
    ref_mean = None if ref is None else ref["acc"].mean
    mean, var = acc.mean, acc.var
    means = {g: mean[index[g]] for g in GROUPS}
    variances = {g: var[index[g]] for g in GROUPS}
    row = {
        "applicable": True,
        "draws": draws,
        "total_variance": float(var.sum()),
        "variance_decoder": float(variances["decoder"].sum()),
        "variance_encoder": float(variances["encoder"].sum()),
        "snr_median": _median_snr(mean, var),
        "snr_median_decoder": _median_snr(means["decoder"], variances["decoder"]),
        "snr_median_encoder": _median_snr(means["encoder"], variances["encoder"]),
        "cosine_to_reference": (None if ref_mean is None or is_reference
                                else _cosine(mean, ref_mean)),
        "reference": reference if ref_mean is not None else None,
        "target": m["target"],
        **_bias(acc, None if ref is None or is_reference else ref["acc"],
                ref is not None and m["target"] == ref["target"]),
        "mean_gradient_norm": float(mean.norm()),
        "seconds_per_gradient": m["seconds"],
        "objective_value": m["objective"],
        "num_parameters": {g: int(index[g].numel()) for g in GROUPS},
    }
    if keep_vectors:
        row["mean"] = {g: means[g].numpy() for g in GROUPS}
        row["variance"] = {g: variances[g].numpy() for g in GROUPS}
    return row


def gradient_statistics(
    model,
    guide,
    x: torch.Tensor,
    objectives: Sequence[str],
    draws: int = 100,
    *,
    num_data: int | None = None,
    seed: int = 0,
    num_particles: int | None = None,
    warmup: int | None = None,
    baseline_lr: float = 1e-2,
    reference: str | None = None,
    warmup_data: torch.Tensor | None = None,
    objective_states: dict | None = None,
    options: dict | None = None,
    keep_vectors: bool = False,
    progress: bool = False,
) -> dict[str, dict]:
    """Statistics of ``draws`` gradient estimates per objective, at the current parameters.

    :param model, guide: a Pyro model/guide pair called as ``model(x, num_data=...)``.
    :param x: the fixed minibatch, shape ``(B, ...)``.
    :param objectives: registered objective names (``trace``, ``score-avg``, ``iwae-5``, ...).
    :param draws: G, the number of independent estimates (>= 2).
    :param num_data: passed to model and guide (the data plate then scales by num_data / B);
        ``None``: gradients of the batch *sum* of per-point objectives.
    :param seed: each objective starts from ``pyro.set_rng_seed(seed)``.
    :param num_particles: particles per estimate for names without a ``-K`` suffix (default:
        each objective's own).
    :param warmup: draws spent warming up stateful estimators (baselines) before measuring;
        default :data:`DEFAULT_WARMUP` (300) for those; stateless estimators need none.
    :param reference: the objective whose mean gradient the cosines and bias columns compare
        to; default ``trace``, or ``score-avg`` where the guide has discrete latents.
    :param warmup_data: if given (``(N, ...)``, N >= B), the warm-up draws use random minibatches
        of B points from it, as in training, instead of ``x`` itself. This matters for the
        decaying average, which is kept per position in the batch: warmed up on ``x`` it becomes
        a per-data-point (input-dependent) baseline for ``x``, which it never is in training.
    :param objective_states: ``{name: {module_name: state_dict}}``, trained states of an
        objective's own modules (e.g. the neural baseline saved in a ``score-nn`` run's
        checkpoint) loaded before the warm-up.
    :param options: keyword options for :func:`~ppl_vae.infer.objectives.make_objective`, each
        passed to the objectives that take it.
    :param keep_vectors: also return per-coordinate ``mean`` / ``variance`` arrays per group.
    :param progress: a progress bar (with ETA) on stderr over every warm-up and measured draw.
    :returns: ``{name: {"applicable": bool, "total_variance": ..., ...}}`` (see module docs);
        for an objective that does not apply (one whose ELBO cannot infer discrete latents, on a
        discrete-latent model) ``applicable`` is False, ``reason`` says why and the statistics
        are None.
    """
    draws = int(draws)
    if draws < 2:
        raise ConfigError(f"draws must be >= 2, got {draws}")
    objectives = parse_objective_list(objectives)
    x = torch.as_tensor(x)
    kwargs = {} if num_data is None else {"num_data": num_data}
    groups = parameter_groups(model, guide, x, **kwargs)
    discrete = has_discrete_latents(guide, x, **kwargs)
    reference = reference or ("score-avg" if discrete else "trace")
    x_dim = int(x.reshape(x.shape[0], -1).shape[1])

    def applicable(name):
        return not discrete or objective_spec(name).can_infer_discrete

    measured: dict[str, dict] = {}
    names = [name for name in dict.fromkeys([*objectives, reference]) if applicable(name)]
    from tqdm.auto import tqdm

    # the total grows by each stateful objective's warm-up once it is known
    with tqdm(total=draws * len(names), disable=not progress, desc="grad-variance",
              unit="draw", dynamic_ncols=True, leave=False, file=sys.stderr) as bar:
        for name in names:
            objective = _objective_for(name, num_particles, dict(options or {}), x_dim,
                                       objective_states)
            w = (DEFAULT_WARMUP if warmup is None else int(warmup)) if _is_stateful(objective) \
                else 0
            bar.total += w
            bar.set_postfix_str(name, refresh=True)
            measured[name] = _measure(objective, model, guide, x, groups, draws, w, num_data,
                                      baseline_lr, seed, warmup_data,
                                      tick=lambda: bar.update(1))
            measured[name]["target"] = target_of(name, num_particles)
    ref = measured.get(reference)
    results: dict[str, dict] = {}
    for name in objectives:
        if name in measured:
            results[name] = _row(measured[name], draws, ref, reference, name == reference,
                                 keep_vectors)
        else:
            results[name] = {"applicable": False,
                             "reason": "needs reparameterizable latents; the guide has discrete "
                                       "ones", **{k: None for k in STAT_KEYS},
                             "target": target_of(name, num_particles)}
    return results


def statistics_frame(results: dict[str, dict]) -> pd.DataFrame:
    """One row per objective with the scalar statistics (a tidy table for CSV / markdown)."""
    rows = []
    for name, r in results.items():
        row = {"objective": name, "applicable": r.get("applicable", True)}
        row.update({k: r.get(k) for k in STAT_KEYS})
        rows.append(row)
    return pd.DataFrame(rows, columns=["objective", "applicable", *STAT_KEYS])


def fixed_minibatch(data: torch.Tensor, batch_size: int, seed: int = 0) -> torch.Tensor:
    """``batch_size`` points of ``data`` drawn without replacement by a generator seeded with
    ``seed`` (the same points for the same seed, whatever the global RNG state)."""
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(int(seed))
    return data[torch.randperm(data.shape[0], generator=gen)[: int(batch_size)]]


def run_gradient_statistics(run, objectives: Sequence[str], draws: int = 100, *,
                            split: str = "train", batch_size: int = 64, seed: int = 0,
                            num_particles: int | None = None, warmup: int | None = None,
                            device=None, progress: bool = False
                            ) -> tuple[dict[str, dict], torch.Tensor]:
    """:func:`gradient_statistics` at a trained run's parameters (a
    :class:`~ppl_vae.training.runs.Run`), on a :func:`fixed_minibatch` of its ``split``; baselines
    warm up on the training split, and the run's own objective resumes with its trained modules
    (e.g. ``score-nn``'s baseline). Returns the statistics and the minibatch. What ``ppl-vae
    grad-variance`` runs."""
    data = run.split(split)
    x = fixed_minibatch(data, batch_size, seed)
    warmup_data = run.split("train") if split != "train" else data
    if device is not None:
        x, warmup_data = x.to(device), warmup_data.to(device)
        run.model.to(device), run.guide.to(device)
    run.model.train(), run.guide.train()
    saved = run.checkpoint.get("objective_modules") or {}
    states = {run.config.objective: saved} if saved else None
    results = gradient_statistics(run.model, run.guide, x, objectives, draws=draws, seed=seed,
                                  num_particles=num_particles, warmup=warmup,
                                  warmup_data=warmup_data, objective_states=states,
                                  progress=progress)
    return results, x
