"""Annealed importance sampling (Neal 2001) with HMC transitions (Wu et al. 2017)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from torch.distributions import biject_to

from ppl_vae.errors import ConfigError
from ppl_vae.marginal.common import (
    AIS_ELEMENT_BUDGET,
    AIS_SCHEDULES,
    Layout,
    check_data,
    chunk_ranges,
    collect_result,
    default_chunks,
    kept_rng_state,
    optional_positive_int,
    point_block,
    point_blocks,
    point_seed,
    positive_int,
    probe,
    progress_bar,
    seed_streams,
    weight_stats,
)
from ppl_vae.marginal.result import MarginalLikelihoodResult
from ppl_vae.poutine.trace import latent_sites, particle_plate, sample_sites


# ------------------------------------------------------------------------------------------
# annealed importance sampling
# ------------------------------------------------------------------------------------------
def _schedule(schedule, num_steps: int) -> torch.Tensor:
    """β_0 = 0 < β_1 < ... < β_T = 1 (float64, length T + 1)."""
    if isinstance(schedule, str):
        t = num_steps
        if schedule == "linear" or t == 1:
            betas = torch.linspace(0.0, 1.0, t + 1, dtype=torch.float64)
        elif schedule == "geometric":
            # β_1..β_T geometrically spaced from 1e-4 to 1 (Neal 2001 uses geometric spacing)
            betas = torch.cat([
                torch.zeros(1, dtype=torch.float64),
                torch.logspace(-4.0, 0.0, t, dtype=torch.float64),
            ])
        elif schedule == "sigmoid":
            # Grosse et al. 2016 / Wu et al. 2017: β_t ∝ σ(δ (2t/T - 1)), rescaled to [0, 1], δ = 4
            s = torch.sigmoid(torch.linspace(-4.0, 4.0, t + 1, dtype=torch.float64))
            betas = (s - s[0]) / (s[-1] - s[0])
        else:
            raise ConfigError(
                f"unknown AIS schedule {schedule!r}; choose one of {AIS_SCHEDULES} or pass the "
                "temperatures β_0 = 0 < ... < β_T = 1"
            )
        betas[0], betas[-1] = 0.0, 1.0
        return betas
    try:
        betas = torch.as_tensor(schedule, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot read the AIS schedule {schedule!r}: {exc}") from None
    if (
        betas.numel() < 2
        or float(betas[0]) != 0.0
        or float(betas[-1]) != 1.0
        or bool((betas[1:] < betas[:-1]).any())
    ):
        raise ConfigError(
            "an explicit AIS schedule must be non-decreasing from β_0 = 0 to β_T = 1 "
            "(at least two values)"
        )
    return betas


@dataclass
class _LatentSite:
    name: str
    transform: object  # unconstrained -> support
    u_event_dim: int
    identity: bool


def _latent_transforms(layout: Layout) -> list[_LatentSite]:
    out = []
    for name in layout.latent:
        support = layout.supports[name]
        if support.is_discrete:
            raise ConfigError(
                f"latent site {name!r} is discrete ({support}); AIS with HMC needs continuous "
                "latents (use importance_sampling or naive_monte_carlo)"
            )
        try:
            t = biject_to(support)
        except NotImplementedError:
            raise ConfigError(
                f"latent site {name!r} has support {support} with no bijection to the reals"
            ) from None
        base = support.base_constraint if isinstance(support, constraints.independent) else support
        identity = base is constraints.real
        out.append(_LatentSite(name, t, int(t.domain.event_dim), identity))
    return out


def _cb_view(v: torch.Tensor, u: torch.Tensor, site: _LatentSite, layout: Layout):
    """View a (chains or 1, points) tensor so that it broadcasts against the site tensor ``u``."""
    nb = layout.max_plate_nesting + 1
    if u.dim() - site.u_event_dim != nb:
        raise ConfigError(
            f"latent site {site.name!r} has shape {tuple(u.shape)}, expected "
            f"{nb} batch dimensions (max_plate_nesting + 1) and {site.u_event_dim} event "
            "dimension(s)"
        )
    shape = [1] * nb
    shape[0] = v.shape[0]
    shape[nb + layout.data_dim] = v.shape[1]
    return v.reshape(shape + [1] * site.u_event_dim)


RECORD_MIN_GRADIENTS = 2000  # record the potential when a block evaluates it this often


class _AnnealedTarget:
    """log q(z) and log p(x, z) (with the Jacobian of z = T(u)) and their gradients in u.
    ``record``: whether to record the potential as a graph on the first call (worth its ~1 s
    when a block evaluates it at least :data:`RECORD_MIN_GRADIENTS` times)."""

    record = True

    def __init__(self, model, guide, xb, chains, layout, sites, init):
        self.model, self.guide, self.xb = model, guide, xb
        self.chains, self.layout, self.sites, self.init = chains, layout, sites, init
        self.shape = (chains, xb.shape[0])
        self._graph = None  # the recorded potential (False: not recordable or not worth it)

    def initial(self) -> dict:
        fn = self.guide if self.init == "guide" else self.model
        with torch.no_grad(), particle_plate(self.chains, self.layout.max_plate_nesting):
            tr = poutine.trace(fn).get_trace(self.xb)
        return {s.name: s.transform.inv(tr.nodes[s.name]["value"]).detach() for s in self.sites}

    def __call__(self, u: dict):
        """(A, B, grad A, grad B) with A = log q + log|J|, B = log p(x, z) + log|J|.

        The first call records :meth:`evaluate` as a graph of tensor operations
        (:func:`~ppl_vae.infer.compiled.capture_function`; the parameters are fixed during
        annealing) and later calls replay it, without Pyro's tracing on every leapfrog step:
        the same arithmetic. A pair whose potential cannot be recorded is evaluated directly."""
        names = list(u)
        if self._graph is None and not self.record:
            self._graph = False
        if self._graph is None:
            from ppl_vae.infer.compiled import NotCompilable, capture_function

            def flat(*values):
                a, b, ga, gb = self.evaluate(dict(zip(names, values)))
                return (a, b, *(ga[n] for n in names), *(gb[n] for n in names))

            try:
                self._graph = capture_function(flat, *(u[n].detach() for n in names))
            except NotCompilable:
                self._graph = False
        if self._graph is False:
            return self.evaluate(u)
        with torch.no_grad():
            a, b, *grads = self._graph(*(u[n] for n in names))
        k = len(names)
        return a, b, dict(zip(names, grads[:k])), dict(zip(names, grads[k:]))

    def evaluate(self, u: dict):
        """(A, B, grad A, grad B) through Pyro's traces."""
        layout, shape = self.layout, self.shape
        with torch.enable_grad(), pyro.validation_enabled(False):
            ur = {name: v.detach().requires_grad_(True) for name, v in u.items()}
            z, ldj = {}, 0.0
            for s in self.sites:
                zs = s.transform(ur[s.name])
                z[s.name] = zs
                if not s.identity:
                    ldj = ldj + layout.per_point(
                        s.transform.log_abs_det_jacobian(ur[s.name], zs))
            with particle_plate(self.chains, layout.max_plate_nesting):
                mtr = poutine.trace(poutine.condition(self.model, data=z)).get_trace(self.xb)
                gtr = None
                if self.init == "guide":
                    gtr = poutine.trace(poutine.condition(self.guide, data=z)).get_trace(self.xb)
            # condition() marks the given z as observed: name the latent sites explicitly
            mtr.compute_log_prob()
            log_p = sum(layout.reduce(site["log_prob"]) for site in sample_sites(mtr).values())
            qtr = mtr
            if gtr is not None:
                missing = sorted(set(z) - set(sample_sites(gtr)))
                if missing or set(latent_sites(gtr)):
                    raise ConfigError(
                        f"the guide's latent sites differ from the model's {sorted(z)} "
                        "(stochastic control flow?)")
                gtr.compute_log_prob()
                qtr = gtr
            log_q = sum(layout.reduce(qtr.nodes[name]["log_prob"]) for name in z)
            a = torch.broadcast_to(log_q + ldj, shape)
            b = torch.broadcast_to(log_p + ldj, shape)
            inputs = list(ur.values())
            ga = torch.autograd.grad(a.sum(), inputs, retain_graph=True, allow_unused=True)
            gb = torch.autograd.grad(b.sum(), inputs, allow_unused=True)
        zero = torch.zeros_like
        ga = {n: zero(v) if g is None else g for (n, v), g in zip(ur.items(), ga)}
        gb = {n: zero(v) if g is None else g for (n, v), g in zip(ur.items(), gb)}
        return a.detach(), b.detach(), ga, gb


def _kinetic(p: dict, sites, layout) -> torch.Tensor:
    total = 0.0
    for s in sites:
        total = total + layout.per_point(0.5 * p[s.name] ** 2, s.u_event_dim)
    return total


def _hmc_step(target, sites, layout, state, beta: float, eps, num_leapfrog: int):
    """One HMC transition leaving f_β ∝ q^(1-β) p(x,·)^β invariant, for every (chain, point).

    Identity mass matrix, ``num_leapfrog`` leapfrog steps of size ``eps`` (one per data point),
    Metropolis accept/reject per (chain, point); non-finite energies are rejected.
    """
    u, a, b, ga, gb = state
    eps_v = {s.name: _cb_view(eps[None, :], u[s.name], s, layout) for s in sites}

    def grad(ga_, gb_):
        return {n: (1.0 - beta) * ga_[n] + beta * gb_[n] for n in ga_}

    p0 = {n: torch.randn_like(v) for n, v in u.items()}
    g = grad(ga, gb)
    p = {n: p0[n] + 0.5 * eps_v[n] * g[n] for n in u}
    un = dict(u)
    for i in range(num_leapfrog):
        un = {n: un[n] + eps_v[n] * p[n] for n in u}
        a1, b1, ga1, gb1 = target(un)
        g = grad(ga1, gb1)
        scale = 1.0 if i < num_leapfrog - 1 else 0.5
        p = {n: p[n] + scale * eps_v[n] * g[n] for n in u}
    h0 = -((1.0 - beta) * a + beta * b) + _kinetic(p0, sites, layout)
    h1 = -((1.0 - beta) * a1 + beta * b1) + _kinetic(p, sites, layout)
    log_ratio = (h0 - h1).double()
    accept_prob = torch.exp(log_ratio.clamp(max=0.0))
    accept_prob = torch.where(torch.isfinite(h1), accept_prob, torch.zeros_like(accept_prob))
    accept_prob = torch.nan_to_num(accept_prob, nan=0.0)
    accept = torch.rand_like(accept_prob) < accept_prob
    new_u, new_ga, new_gb = {}, {}, {}
    for s in sites:
        m = _cb_view(accept, u[s.name], s, layout)
        new_u[s.name] = torch.where(m, un[s.name], u[s.name])
        new_ga[s.name] = torch.where(m, ga1[s.name], ga[s.name])
        new_gb[s.name] = torch.where(m, gb1[s.name], gb[s.name])
    new_a = torch.where(accept, a1, a)
    new_b = torch.where(accept, b1, b)
    return (new_u, new_a, new_b, new_ga, new_gb), accept_prob


def _check_options(guide, num_samples, num_steps, init, schedule, num_leapfrog, step_size,
                   target_accept, min_step_size, max_step_size, batch_size, particle_chunk):
    """Validated ``(chains, T, num_leapfrog, batch_size, particle_chunk)``."""
    if init not in ("guide", "prior"):
        raise ConfigError(f"init must be 'guide' or 'prior', got {init!r}")
    if init == "guide" and guide is None:
        raise ConfigError("init='guide' needs a guide; pass init='prior' to start from p(z)")
    for name, v in (("step_size", step_size), ("min_step_size", min_step_size),
                    ("max_step_size", max_step_size)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{name} must be a positive number, got {v!r}")
    if not 0.0 < float(target_accept) < 1.0:
        raise ConfigError(f"target_accept must be in (0, 1), got {target_accept!r}")
    if isinstance(schedule, str) and schedule not in AIS_SCHEDULES:
        raise ConfigError(
            f"unknown AIS schedule {schedule!r}; choose one of {AIS_SCHEDULES} or pass the "
            "temperatures β_0 = 0 < ... < β_T = 1"
        )
    return (positive_int(num_samples, "num_samples"), positive_int(num_steps, "num_steps"),
            positive_int(num_leapfrog, "num_leapfrog"),
            optional_positive_int(batch_size, "batch_size"),
            optional_positive_int(particle_chunk, "particle_chunk"))


def _ais_blocks(n, batch_size, particle_chunk, seed, index_offset, whole_data=False):
    """Chunks of points: plain chunks of ``batch_size``, or with a seed the padded blocks of
    global indices of :func:`~ppl_vae.marginal.common.point_blocks` (per-point results
    independent of the chunking and of the split across workers); all points at once for a
    pair that runs only on the whole data (block index ``-1 - index_offset``)."""
    if whole_data:
        yield -1 - index_offset, torch.arange(n), torch.ones(n, dtype=torch.bool)
        return
    if seed is not None:
        yield from point_blocks(n, index_offset, point_block(particle_chunk))
        return
    for b0, b1 in chunk_ranges(n, batch_size):
        yield None, torch.arange(b0, b1), torch.ones(b1 - b0, dtype=torch.bool)


def _anneal(target, sites, layout, betas, step_size, num_leapfrog, adapt, bar, points):
    """Run one chunk of chains along the path; ``(log weights (chains, points), summed
    acceptance per point, final step sizes)``. ``adapt``: ``None`` or ``(target_accept, lo,
    hi)`` for the step-size adaptation of Wu et al. (2017); ``bar`` counts (point, chain,
    step) triples, ``points`` of them per chain and step."""
    t_steps = betas.numel() - 1
    u = target.initial()
    state = (u, *target(u))
    ref = next(iter(u.values()))
    n_points = target.shape[1]
    logw = torch.zeros(target.shape, dtype=torch.float64, device=ref.device)
    eps = torch.full((n_points,), float(step_size), dtype=ref.dtype, device=ref.device)
    avg_acc = torch.full((n_points,), adapt[0] if adapt else 0.0, dtype=torch.float64,
                         device=ref.device)
    acc_total = torch.zeros(n_points, dtype=torch.float64, device=ref.device)
    for t in range(1, t_steps + 1):
        _, a, b, _, _ = state
        logw += (betas[t] - betas[t - 1]).item() * (b - a).double()
        if t < t_steps:
            state, acc = _hmc_step(target, sites, layout, state, float(betas[t]), eps,
                                   num_leapfrog)
            acc_point = acc.mean(0)
            acc_total += acc_point
            if adapt:
                avg_acc = 0.9 * avg_acc + 0.1 * acc_point
                eps = torch.where(avg_acc > adapt[0], eps * 1.02, eps * 0.98)
                eps = eps.clamp(float(adapt[1]), float(adapt[2]))
        bar.update(points * target.shape[0])
    return logw, acc_total, eps


@torch.no_grad()
def annealed_importance_sampling(
    model: Callable,
    guide: Callable | None,
    x: torch.Tensor,
    num_samples: int,
    num_steps: int,
    *,
    init: str = "guide",
    schedule: str | Sequence[float] = "sigmoid",
    num_leapfrog: int = 10,
    step_size: float = 0.05,
    target_accept: float = 0.65,
    adapt_step_size: bool = True,
    min_step_size: float = 1e-4,
    max_step_size: float = 0.5,
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
    r"""Annealed importance sampling [1] of :math:`\log p(x)` per data point, with HMC [2].

    Each of the :math:`C` = ``num_samples`` chains starts at :math:`z_0 \sim q` and follows the
    geometric path :math:`f_t(z) = q(z)^{1-\beta_t}\, p(x, z)^{\beta_t}`,
    :math:`0 = \beta_0 \le \dots \le \beta_T = 1`, from :math:`q` (the guide :math:`q(z \mid x)`
    with ``init="guide"``, or the prior :math:`p(z)` with ``init="prior"``, when ``guide`` may
    be None) to the unnormalized posterior; for :math:`t = 1 .. T` it adds a term to its log
    weight and then (for :math:`t < T`) moves by one HMC transition that leaves :math:`f_t`
    invariant:

    .. math::

        \log w_c = \sum_{t=1}^{T} (\beta_t - \beta_{t-1})
            \big[\log p(x, z_{t-1}) - \log q(z_{t-1})\big], \qquad
        \log \hat p(x) = \log \frac{1}{C} \sum_{c=1}^{C} w_c .

    :math:`\mathbb{E}[w_c] = p(x)`, so :math:`\log \hat p(x)` is a stochastic lower bound on
    :math:`\log p(x)` that becomes exact as :math:`T` grows; :math:`T = 1` is importance
    sampling. This is the evaluation protocol of Wu et al. [3] for decoder-based models. The
    temperatures come from ``schedule``: ``"sigmoid"`` (default, the spacing used by [3]:
    :math:`\beta_t \propto \sigma(4 (2t/T - 1))`, rescaled to :math:`[0, 1]`), ``"geometric"``
    (:math:`\beta_1 .. \beta_T` log-spaced from 1e-4 to 1, as in [1]), ``"linear"``, or an
    explicit sequence, which then sets :math:`T` whatever ``num_steps`` says. On a
    linear-Gaussian test problem the sigmoid spacing had 2-5x lower log-weight variance than
    the geometric one for the same :math:`T` when starting from the guide (the geometric
    spacing spends half its steps at :math:`\beta < 0.01`).

    HMC (identity mass matrix, ``num_leapfrog`` leapfrog steps) runs on the unconstrained
    values :math:`u = T^{-1}(z)` (``biject_to(support)``; the log-Jacobian is added at both ends
    of the path, where it cancels from the weights). As in [3], the step size (one per data
    point, shared by its chains, starting at ``step_size``) is multiplied by 1.02 when a running
    average of the acceptance rate (smoothing 0.9) exceeds ``target_accept`` and by 0.98
    otherwise, clipped to [``min_step_size``, ``max_step_size``]; it uses only past transitions,
    so the weights stay valid. Discrete latents are rejected (:class:`ConfigError`). Chunks of
    chains (``particle_chunk``) adapt their step sizes separately.

    :param model: a Pyro model ``model(x)`` with the data points of ``x`` in a vectorized plate.
    :param guide: a Pyro guide ``guide(x)`` with the same latent sites (None with
        ``init="prior"``).
    :param torch.Tensor x: the data, points along dimension 0.
    :param int num_samples: :math:`C`, the number of chains per data point.
    :param int num_steps: :math:`T`, the number of temperatures after :math:`\beta_0`.
    :param str init: ``"guide"`` (default) or ``"prior"``: the start :math:`q` of the path.
    :param schedule: ``"sigmoid"`` (default), ``"geometric"``, ``"linear"`` or the
        temperatures :math:`\beta_0 = 0, \dots, \beta_T = 1`.
    :type schedule: str or sequence of float
    :param int num_leapfrog: leapfrog steps per HMC transition. Default 10.
    :param float step_size: the initial leapfrog step size. Default 0.05.
    :param float target_accept: the acceptance rate the step size is adapted towards.
        Default 0.65.
    :param bool adapt_step_size: adapt the step size (else keep ``step_size``). Default True.
    :param float min_step_size: the smallest adapted step size. Default 1e-4.
    :param float max_step_size: the largest adapted step size. Default 0.5.
    :param batch_size: data points per chunk. Default: enough for about 2**22 floats per tensor
        (not used with a ``seed``).
    :type batch_size: int or None
    :param particle_chunk: chains per chunk (default: all :math:`C` that fit the same budget).
    :type particle_chunk: int or None
    :param max_plate_nesting: the model's plate depth; default: read from a probe trace.
    :type max_plate_nesting: int or None
    :param int data_dim: the batch dimension of the data plate. Default -1.
    :param bool progress: show a progress bar (on stderr). Default False.
    :param bool return_log_weights: also return the ``(N, C)`` log weights in
        ``result.log_weights``. Default False.
    :param seed: if given, the points run in padded blocks of consecutive global indices, each
        seeded from (``seed``, block, chain chunk) (:func:`~ppl_vae.marginal.common.point_blocks`):
        per-point results independent of ``batch_size`` and of how the points are split across
        workers. Default: the global RNG.
    :type seed: int or None
    :param int index_offset: the global index of ``x[0]`` (for ``seed``). Default 0.
    :param whole_data: ``True``: call the pair on all of ``x`` at once (a guide with one
        parameter per data point; :func:`~ppl_vae.marginal.model_evidence`); ``None``
        (default): detected by the probe; ``False``: never.
    :type whole_data: bool or None
    :returns: per-point estimates and diagnostics (``estimator="ais"``); ``log_weight_var`` is
        the variance of the log weights across chains, ``info`` holds the mean
        ``acceptance_rate`` and final ``step_size`` per point, ``num_steps``, ``init`` and
        ``schedule``.
    :rtype: ~ppl_vae.marginal.result.MarginalLikelihoodResult

    Example::

        import torch
        from ppl_vae.guides import DiagonalNormalGuide
        from ppl_vae.marginal import annealed_importance_sampling
        from ppl_vae.models import VAEModel

        model = VAEModel(x_dim=20, latent_dim=2, hidden=(16,))
        guide = DiagonalNormalGuide(x_dim=20, latent_dim=2, hidden=(16,))
        x = torch.rand(5, 20).bernoulli()
        result = annealed_importance_sampling(model, guide, x, num_samples=4, num_steps=10,
                                              num_leapfrog=3)
        rates = result.info["acceptance_rate"]  # per data point

    **References**

    [1] R. M. Neal, *Annealed Importance Sampling*, Statistics and Computing 11, 2001.

    [2] R. M. Neal, *MCMC Using Hamiltonian Dynamics*, Handbook of Markov Chain Monte Carlo,
    2011.

    [3] Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse, *On the Quantitative Analysis of
    Decoder-Based Generative Models*, ICLR 2017.
    """
    t0 = time.perf_counter()
    c, t_steps, num_leapfrog, batch_size, particle_chunk = _check_options(
        guide, num_samples, num_steps, init, schedule, num_leapfrog, step_size, target_accept,
        min_step_size, max_step_size, batch_size, particle_chunk)
    betas = None if isinstance(schedule, str) else _schedule(schedule, t_steps)
    x = check_data(x)
    layout = probe(model, guide, x, max_plate_nesting=max_plate_nesting, data_dim=data_dim,
                    use_guide=init == "guide", whole_data=whole_data)
    if betas is None:
        betas = _schedule(schedule, t_steps)
    t_steps = betas.numel() - 1
    sites = _latent_transforms(layout)
    n = x.shape[0]
    batch_size, particle_chunk = default_chunks(c, batch_size, particle_chunk, layout.num_dims,
                                                n, AIS_ELEMENT_BUDGET)
    stats, kept, acc_rates, step_sizes = [], ([] if return_log_weights else None), [], []
    with progress_bar(progress, n * c * t_steps, "ais", "step") as bar, \
            kept_rng_state(x.device):
        for j, local, keep in _ais_blocks(n, batch_size, particle_chunk, seed, index_offset,
                                          layout.whole_data):
            xb = x[local.to(x.device)]
            lw = torch.empty(len(local), c, dtype=torch.float64)
            acc_sum = torch.zeros(len(local), dtype=torch.float64)
            eps_sum = torch.zeros(len(local), dtype=torch.float64)
            for block, (k0, k1) in enumerate(chunk_ranges(c, particle_chunk)):
                if seed is not None:
                    seed_streams(point_seed(seed, j, block), x.device)
                target = _AnnealedTarget(model, guide, xb, k1 - k0, layout, sites, init)
                target.record = t_steps * num_leapfrog >= RECORD_MIN_GRADIENTS
                adapt = (float(target_accept), min_step_size, max_step_size) \
                    if adapt_step_size else None
                logw, acc_total, eps = _anneal(target, sites, layout, betas, step_size,
                                               num_leapfrog, adapt, bar, int(keep.sum()))
                lw[:, k0:k1] = logw.to("cpu").T
                acc_sum += acc_total.cpu() / max(1, t_steps - 1) * (k1 - k0) / c
                eps_sum += eps.double().cpu() * (k1 - k0) / c
            stats.append(weight_stats(lw[keep]))
            acc_rates.append(acc_sum[keep] if t_steps > 1
                             else torch.full_like(acc_sum[keep], math.nan))
            step_sizes.append(eps_sum[keep])
            if kept is not None:
                kept.append(lw[keep])
    info = {
        "num_steps": t_steps,
        "num_leapfrog": num_leapfrog,
        "init": init,
        "schedule": schedule if isinstance(schedule, str) else "custom",
        "acceptance_rate": torch.cat(acc_rates),
        "step_size": torch.cat(step_sizes),
    }
    return collect_result("ais", stats, c, layout, t0, info=info, log_weights=kept)
