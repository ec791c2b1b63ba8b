"""Shared machinery of the estimators: input checks, the probe trace, log-weight chunking and
diagnostics (ESS, Pareto k-hat, standard error)."""

from __future__ import annotations

import hashlib
import math
import numbers
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from ppl_vae.errors import ConfigError, DataError, PplVaeError
from ppl_vae.marginal.checks import require_density
from ppl_vae.marginal.result import MarginalLikelihoodResult

PARTICLES = "_marginal_particles"
ELEMENT_BUDGET = 2**25  # floats per (particle_chunk x batch_size x D) tensor, IS / naive MC
AIS_ELEMENT_BUDGET = 2**22  # the same for AIS, which also holds an autograd graph
SCHEDULES = ("geometric", "sigmoid", "linear")
#: Samples per call of the per-point (seeded) path; part of the definition of its streams.
PARTICLE_BLOCK = 1000
ROWS_PER_CALL = 8192  # points x samples per call of the seeded path (see point_block)
STATS_BUDGET = 2**22  # float64 log weights held before they are reduced to per-point statistics



# ------------------------------------------------------------------------------------------
# checks and the probe trace
# ------------------------------------------------------------------------------------------
def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if int(value) < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")
    return int(value)


def optional_positive_int(value, name: str):
    return None if value is None else positive_int(value, name)


def check_data(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise DataError(f"x must be a torch.Tensor of shape (N, ...), got {type(x).__name__}")
    if x.dim() < 1:
        raise DataError("x must have at least one dimension (the data points), got a scalar")
    if x.shape[0] < 1:
        raise DataError(f"x holds no data points (shape {tuple(x.shape)})")
    return x


def sample_sites(trace):
    return [
        (name, site)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]


def latent_names(trace) -> list[str]:
    return [name for name, site in sample_sites(trace) if not site["is_observed"]]


def observed_names(trace) -> list[str]:
    return [name for name, site in sample_sites(trace) if site["is_observed"]]


def plate_nesting(trace) -> int:
    dims = [
        -f.dim
        for _, site in sample_sites(trace)
        for f in site["cond_indep_stack"]
        if f.vectorized and f.dim is not None
    ]
    return max(dims, default=0)


def run_probe(fn, x, what: str):
    try:
        trace = poutine.trace(fn).get_trace(x)
        trace.compute_log_prob()  # checks observed values against their distributions' shapes
        return trace
    except PplVaeError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise DataError(
            f"{what}(x) failed on data of shape {tuple(x.shape)} ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}); check that x "
            "has the shape the model and guide expect, with the data points along dimension 0"
        ) from exc


@dataclass
class Layout:
    """What the probe traces say about the model/guide pair."""

    latent: tuple[str, ...]
    observed: tuple[str, ...]
    max_plate_nesting: int
    data_dim: int
    supports: dict
    num_dims: int

    @property
    def particle_dim(self) -> int:
        return -(self.max_plate_nesting + 1)


def _check_guide_latents(mtr, gtr, latent) -> None:
    """The guide must have exactly the model's latent sites, with the same shapes."""
    g_latent = latent_names(gtr)
    if set(g_latent) != set(latent):
        missing = sorted(set(latent) - set(g_latent))
        extra = sorted(set(g_latent) - set(latent))
        raise ConfigError(
            "the guide's latent sites differ from the model's: "
            + "; ".join(
                s
                for s in (
                    f"missing from the guide: {missing}" if missing else "",
                    f"not in the model: {extra}" if extra else "",
                )
                if s
            )
        )
    for name in latent:
        ms, gs = mtr.nodes[name]["value"].shape, gtr.nodes[name]["value"].shape
        if ms != gs:
            raise ConfigError(
                f"latent site {name!r} has shape {tuple(gs)} in the guide but "
                f"{tuple(ms)} in the model"
            )


def _check_data_plate(mtr, gtr, latent, observed, data_dim, xp) -> None:
    """Every latent and observed site must sit in the data plate, whose size is the number of
    data points."""
    n_probe = xp.shape[0]
    sites = [(mtr, name, "model") for name in latent + observed]
    if gtr is not None:
        sites += [(gtr, name, "guide") for name in latent]
    for tr, name, who in sites:
        frames = [f for f in tr.nodes[name]["cond_indep_stack"]
                  if f.vectorized and f.dim == data_dim]
        if not frames:
            raise ConfigError(
                f"{who} site {name!r} is not inside a vectorized plate at dim {data_dim} (the "
                "data plate): every latent and observed site needs one value per data point "
                "(global latents make log p(x_n) non-separable); put it in "
                f"pyro.plate(..., dim={data_dim}) or pass data_dim"
            )
        if frames[0].size != n_probe:
            raise DataError(
                f"the data plate {frames[0].name!r} of {who} site {name!r} has size "
                f"{frames[0].size} for x of shape {tuple(xp.shape)}: the data points must run "
                "along the first dimension of x"
            )


def probe(model, guide, x, *, max_plate_nesting, data_dim, use_guide: bool) -> Layout:
    """Trace model (and guide) on one or two data points; raise clear errors for bad input."""
    n_probe = min(2, x.shape[0])
    xp = x[:n_probe]
    require_density(model, guide if use_guide else None, xp)  # autoencoders: one clear line
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # leaves the RNG streams alone
        mtr = run_probe(model, xp, "model")
        gtr = run_probe(guide, xp, "guide") if use_guide else None
    observed = observed_names(mtr)
    latent = latent_names(mtr)
    if not observed:
        raise ConfigError(
            "the model has no observed sample site: it must observe the data, e.g. "
            "pyro.sample('x', dist, obs=x)"
        )
    if not latent:
        raise ConfigError("the model has no latent sample site; log p(x) needs no estimator")
    if gtr is not None:
        _check_guide_latents(mtr, gtr, latent)
    guessed = max(1, plate_nesting(mtr), plate_nesting(gtr) if gtr is not None else 0)
    if max_plate_nesting is None:
        max_plate_nesting = guessed
    else:
        max_plate_nesting = positive_int(max_plate_nesting, "max_plate_nesting")
        if max_plate_nesting < guessed:
            raise ConfigError(
                f"max_plate_nesting={max_plate_nesting} but the model/guide nest plates "
                f"{guessed} deep"
            )
    if isinstance(data_dim, bool) or not isinstance(data_dim, int) or not (
        -max_plate_nesting <= data_dim <= -1
    ):
        raise ConfigError(
            f"data_dim must be a negative plate dimension in [-{max_plate_nesting}, -1], "
            f"got {data_dim!r}"
        )

    _check_data_plate(mtr, gtr, latent, observed, data_dim, xp)
    supports = {name: mtr.nodes[name]["fn"].support for name in latent}
    return Layout(
        tuple(latent), tuple(observed), max_plate_nesting, data_dim, supports,
        int(x[0].numel()),
    )


# ------------------------------------------------------------------------------------------
# per-data-point reductions
# ------------------------------------------------------------------------------------------
def per_point(t: torch.Tensor, layout: Layout, event_dim: int = 0) -> torch.Tensor:
    """Reduce a site-shaped tensor to (particles or 1, data or 1) by summing all other dims."""
    if event_dim:
        t = t.sum(dim=tuple(range(-event_dim, 0)))
    nb = layout.max_plate_nesting + 1
    if t.dim() < nb:
        t = t.reshape((1,) * (nb - t.dim()) + tuple(t.shape))
    elif t.dim() > nb:
        raise ConfigError(
            f"a site has batch shape {tuple(t.shape)} with more than max_plate_nesting + 1 = "
            f"{nb} dimensions; pass a larger max_plate_nesting"
        )
    t = t.movedim(layout.data_dim, -1)
    if nb > 2:
        t = t.flatten(1, -2).sum(1)
    return t


def sum_log_prob(trace, names, layout: Layout, shape) -> torch.Tensor:
    total = None
    for name in names:
        lp = per_point(trace.nodes[name]["log_prob"], layout)
        total = lp if total is None else total + lp
    return torch.broadcast_to(total, shape)


def weight_stats(lw: torch.Tensor) -> dict:
    """Diagnostics of log weights ``lw`` of shape (B, K), float64."""
    b, k = lw.shape
    lse = torch.logsumexp(lw, -1)
    out = {"log_likelihood": lse - math.log(k)}
    out["ess"] = torch.exp(-torch.logsumexp(2.0 * (lw - lse[:, None]), -1))
    if k > 1:
        w = torch.exp(lw - lw.max(-1, keepdim=True).values)
        out["stderr"] = w.std(-1) / (math.sqrt(k) * w.mean(-1))
        out["log_weight_var"] = lw.var(-1)
    else:
        out["stderr"] = torch.full((b,), math.nan, dtype=lw.dtype)
        out["log_weight_var"] = torch.full((b,), math.nan, dtype=lw.dtype)
    out["log_weight_mean"] = lw.mean(-1)
    out["pareto_k"] = pareto_k_hat(lw)
    return out


def pareto_k_hat(lw: torch.Tensor) -> torch.Tensor:
    """PSIS k̂ per row via :func:`arviz.psislw` (sample axis last); NaN where not estimable."""
    b, k = lw.shape
    out = torch.full((b,), math.nan, dtype=torch.float64)
    top = lw.max(-1).values
    ok = torch.isfinite(top) & ~torch.isnan(lw).any(-1)
    # weights equal to float precision (an exact guide) are ties too: k̂ is not defined
    ok &= (top - lw.min(-1).values) > 1e-9 * (1.0 + top.abs())
    if k < 2 or not bool(ok.any()):
        return out
    import arviz

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, khat = arviz.psislw(lw[ok].numpy().copy(), reff=1.0)
    khat = torch.as_tensor(khat, dtype=torch.float64).reshape(-1)
    # arviz returns inf when fewer than 5 weights lie above the tail cutoff (K < 21, or ties)
    khat[~torch.isfinite(khat)] = math.nan
    out[ok] = khat
    return out


def chunk_ranges(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def default_chunks(k, batch_size, particle_chunk, num_dims, n, budget):
    rows = max(1, budget // max(1, num_dims))
    if particle_chunk is None:
        particle_chunk = min(k, rows)
    if batch_size is None:
        batch_size = max(1, rows // particle_chunk)
    return min(batch_size, n), min(particle_chunk, k)


def progress_bar(progress, total, desc, unit):
    return tqdm(
        total=total, disable=not progress, desc=desc, unit=unit, unit_scale=True,
        dynamic_ncols=True, leave=False, file=sys.stderr,
    )


def collect_result(name, stats, k, layout, t0, info=None,
                   log_weights=None) -> MarginalLikelihoodResult:
    cat = {key: torch.cat([s[key] for s in stats]) for key in stats[0]}
    return MarginalLikelihoodResult(
        estimator=name,
        num_samples=k,
        num_dims=layout.num_dims,
        seconds=time.perf_counter() - t0,
        info=info or {},
        log_weights=torch.cat(log_weights) if log_weights is not None else None,
        **cat,
    )


def point_seed(seed: int, index: int, block: int = 0) -> int:
    """The seed of data point ``index``'s particle block ``block``: a hash of the three, so the
    streams of different points and blocks do not overlap in any simple way."""
    h = hashlib.blake2b(f"{int(seed)}:{int(index)}:{int(block)}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & (2**63 - 1)


def seed_streams(seed: int, device) -> None:
    """Seed the generators that sampling on ``device`` uses. (``torch.manual_seed`` would also
    queue seeds for every lazily initialized backend, recording a stack trace each time: ~1 ms
    per call, too slow to do once per data point.)"""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(seed)


@contextmanager
def kept_rng_state(device):
    """Restore the torch RNG state of the CPU (and of ``device``) on exit."""
    state = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(state)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


def _batched_weights(log_weight_fn, x, k, batch_size, particle_chunk, bar, on_rows):
    """Chunks of ``batch_size`` points x ``particle_chunk`` samples from the global RNG."""
    for b0, b1 in chunk_ranges(x.shape[0], batch_size):
        lw = torch.empty(b1 - b0, k, dtype=torch.float64)
        for k0, k1 in chunk_ranges(k, particle_chunk):
            lw[:, k0:k1] = log_weight_fn(x[b0:b1], k1 - k0).to("cpu", torch.float64).T
            bar.update((b1 - b0) * (k1 - k0))
        on_rows(lw)


def point_block(num_particles: int) -> int:
    """Data points per block of the seeded path: enough rows (points x samples) per call to
    amortize the per-call cost, at most 64 points (a block running past the end of the data is
    padded, so small evaluations should not pay for large blocks)."""
    return min(64, max(1, ROWS_PER_CALL // num_particles))


def point_blocks(n: int, index_offset: int, b: int):
    """``(block, local_indices, keep)`` for the blocks of ``b`` consecutive global indices that
    cover points ``index_offset .. index_offset + n - 1``: positions outside ``x`` point at the
    nearest point (padding) and have ``keep`` False."""
    for j in range(index_offset // b, (index_offset + n - 1) // b + 1):
        glob = torch.arange(j * b, (j + 1) * b)
        keep = (glob >= index_offset) & (glob < index_offset + n)
        yield j, (glob - index_offset).clamp(0, n - 1), keep


def _seeded_weights(log_weight_fn, x, k, particle_chunk, seed, index_offset, bar, on_rows):
    """Blocks of ``point_block(particle_chunk)`` consecutive *global* indices, each block's
    samples drawn after seeding the RNG with :func:`point_seed` (seed, block, particle block).
    A block that runs past either end of ``x`` is padded with copies of the nearest point and
    the padding's weights are dropped, so each point's weights depend only on (seed, its global
    index, K) and on nothing else: not on the batch size, nor on where ``x`` was cut (the
    shards of several workers), as long as sampling a site draws a fixed number of random
    numbers per element (reparameterized location-scale families, Bernoulli, ...)."""
    n, b = x.shape[0], point_block(particle_chunk)
    group = max(1, STATS_BUDGET // (k * b))  # blocks whose weights are reduced together
    rows = []
    with kept_rng_state(x.device):
        for j, local, keep in point_blocks(n, index_offset, b):
            lw = torch.empty(b, k, dtype=torch.float64)
            for block, (k0, k1) in enumerate(chunk_ranges(k, particle_chunk)):
                seed_streams(point_seed(seed, j, block), x.device)
                lw[:, k0:k1] = log_weight_fn(x[local.to(x.device)], k1 - k0).to(
                    "cpu", torch.float64).T
            rows.append(lw[keep])
            bar.update(int(keep.sum()) * k)
            if len(rows) == group:
                on_rows(torch.cat(rows))
                rows = []
        if rows:
            on_rows(torch.cat(rows))


def run_weights(name, log_weight_fn, x, k, batch_size, particle_chunk, layout, progress,
                return_log_weights, t0, seed=None, index_offset=0) -> MarginalLikelihoodResult:
    """Log weights ``log_weight_fn(x_chunk, num_samples) -> (num_samples, chunk)`` for every
    point of ``x``, reduced to per-point estimates and diagnostics.

    ``seed=None``: chunks of ``batch_size`` points x ``particle_chunk`` samples drawn from the
    global RNG. With a ``seed``: per-point random streams (see :func:`_seeded_weights`);
    ``batch_size`` is then not used, and ``particle_chunk`` (default :data:`PARTICLE_BLOCK`)
    is part of the streams' definition. Pyro's validation is switched off inside the loop: the
    probe trace
    has already checked shapes and supports, and the checks cost ~10% of the work.
    """
    n = x.shape[0]
    stats, kept = [], ([] if return_log_weights else None)

    def on_rows(lw):
        stats.append(weight_stats(lw))
        if kept is not None:
            kept.append(lw)

    with progress_bar(progress, n * k, name, "sample") as bar, pyro.validation_enabled(False):
        if seed is None:
            batch_size, particle_chunk = default_chunks(
                k, batch_size, particle_chunk, layout.num_dims, n, ELEMENT_BUDGET)
            _batched_weights(log_weight_fn, x, k, batch_size, particle_chunk, bar, on_rows)
        else:
            particle_chunk = min(k, particle_chunk or PARTICLE_BLOCK)
            _seeded_weights(log_weight_fn, x, k, particle_chunk, seed, index_offset, bar,
                            on_rows)
    return collect_result(name, stats, k, layout, t0, log_weights=kept)


def check_same_latents(model_names, guide_names):
    if set(model_names) != set(guide_names):
        raise ConfigError(
            f"the guide's latent sites {sorted(guide_names)} differ from the model's "
            f"{sorted(model_names)} (stochastic control flow?)"
        )


