"""Shared machinery of the estimators: input checks, the probe trace, log-weight chunking and
diagnostics (ESS, Pareto k-hat, standard error)."""

from __future__ import annotations

import hashlib
import math
import numbers
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from ppl_vae.errors import ConfigError, DataError, PplVaeError
from ppl_vae.marginal.checks import require_density
from ppl_vae.marginal.result import MarginalLikelihoodResult
from ppl_vae.poutine import trace as vocab

ELEMENT_BUDGET = 2**25  # floats per (particle_chunk x batch_size x D) tensor, IS / naive MC
AIS_ELEMENT_BUDGET = 2**22  # the same for AIS, which also holds an autograd graph
#: The AIS temperature schedules by name (see :func:`~ppl_vae.marginal.ais.ais_temperatures`).
AIS_SCHEDULES = ("geometric", "sigmoid", "linear")
#: Samples per call of the per-point (seeded) path; part of the definition of its streams.
PARTICLE_BLOCK = 1000
ROWS_PER_CALL = 8192  # points x samples per call of the seeded path (see point_block)
STATS_BUDGET = 2**22  # float64 log weights held before they are reduced to per-point statistics
#: ``compile="auto"``: IS and naive MC compile their log weights when N x K is at least this.
#: A cold capture and Inductor compile costs 5-10 s; a compiled block of ~8000 rows of the
#: 784-500-500-50 VAE saves 15-20% of its time on AMD Zen 4 and Intel Xeon CPUs (so the compile
#: is repaid from ~3-5 million rows; measured: 0.71-0.93x at 1-2 million, 1.06-1.20x at 10
#: million) and 30-60% on Zen 5 (repaid below a million). See docs/speed.md.
COMPILE_MIN_ROWS = 5_000_000



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
    """What the probe traces say about the model/guide pair.

    ``whole_data``: the pair only runs on all of ``x`` at once (a guide with one parameter per
    data point, a model whose data plate has a fixed size), so the estimators never cut ``x``
    into chunks of points.
    """

    latent: tuple[str, ...]
    observed: tuple[str, ...]
    max_plate_nesting: int
    data_dim: int
    supports: dict
    num_dims: int
    whole_data: bool = False

    @property
    def particle_dim(self) -> int:
        return -(self.max_plate_nesting + 1)

    def per_point(self, t: torch.Tensor, event_dim: int = 0) -> torch.Tensor:
        """``t`` reduced to (particles or 1, data points or 1): :func:`vocab.per_point`."""
        return vocab.per_point(t, self.max_plate_nesting, self.data_dim, event_dim)

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        return vocab.per_point(t, self.max_plate_nesting, self.data_dim)


def _check_guide_latents(mtr, gtr, latent) -> None:
    """The guide must have exactly the model's latent sites, with the same shapes (sites the
    model enumerates need none)."""
    g_latent = list(vocab.latent_sites(gtr))
    latent = [n for n in latent if n in g_latent
              or mtr.nodes[n]["infer"].get("enumerate") != "parallel"]
    if set(g_latent) != set(latent):
        missing = sorted(set(latent) - set(g_latent))
        extra = sorted(set(g_latent) - set(latent))
        parts = [f"missing from the guide: {missing}" if missing else "",
                 f"not in the model: {extra}" if extra else ""]
        raise ConfigError("the guide's latent sites differ from the model's: "
                          + "; ".join(p for p in parts if p))
    for name in latent:
        ms, gs = mtr.nodes[name]["value"].shape, gtr.nodes[name]["value"].shape
        if ms != gs:
            raise ConfigError(
                f"latent site {name!r} has shape {tuple(gs)} in the guide but "
                f"{tuple(ms)} in the model")


def _data_frame(trace, name, data_dim):
    frames = [f for f in trace.nodes[name]["cond_indep_stack"]
              if f.vectorized and f.dim == data_dim]
    return frames[0] if frames else None


def _check_data_plate(mtr, gtr, latent, observed, data_dim, xp) -> None:
    """Every latent and observed site must sit in the data plate, whose size (where the program
    gives one) is the number of data points. Global sites are reported first: they are the
    reason, not the plate's size."""
    sites = [(mtr, name, "model") for name in latent + observed]
    if gtr is not None:
        sites += [(gtr, name, "guide") for name in latent if name in gtr.nodes]
    outside = sorted({name for tr, name, _ in sites if _data_frame(tr, name, data_dim) is None})
    if outside:
        raise ConfigError(
            f"sites {outside} are not inside a vectorized plate at dim {data_dim} (the data "
            "plate): global latents make log p(x_n) non-separable, so there is no per-point "
            "log-likelihood; estimate the model evidence log p(X) of the whole data set with "
            "ppl_vae.marginal.model_evidence (ppl-vae evaluate --evidence), or pass the "
            "data_dim of your data plate")
    for tr, name, who in sites:
        frame = _data_frame(tr, name, data_dim)
        if frame.size not in (None, -1) and frame.size != xp.shape[0]:
            raise DataError(
                f"the data plate {frame.name!r} of {who} site {name!r} has size {frame.size} "
                f"for x of shape {tuple(xp.shape)}: the data points must run along the first "
                "dimension of x")


def _probe_traces(model, guide, x, use_guide: bool, whole_data=None):
    """Model and guide traces on the first two points of ``x`` or, where the pair cannot run on
    a part of the data (per-point guide parameters, a fixed-size data plate), on all of it:
    ``(model trace, guide trace or None, whole_data)``."""
    attempts = [(x[:min(2, x.shape[0])], False)]
    if whole_data:
        attempts = [(x, True)]
    elif x.shape[0] > 2 and whole_data is None:
        attempts.append((x, True))
    first = None
    for xp, whole in attempts:
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):  # RNG streams untouched
                mtr = run_probe(model, xp, "model")
                gtr = run_probe(guide, xp, "guide") if use_guide else None
        except DataError as exc:
            first = first or exc
            continue
        if not whole or whole_data or _points_observed(mtr, x.shape[0]):
            return mtr, gtr, whole, xp
    raise first


def _points_observed(trace, n: int) -> bool:
    """Whether some observed site's value holds the ``n`` points in a batch dimension (a pair
    that only runs on the whole data must still observe one value per point)."""
    for site in vocab.observed_sites(trace).values():
        batch = site["value"].shape[:site["value"].dim() - site["fn"].event_dim]
        if n in tuple(batch):
            return True
    return False


def probe(model, guide, x, *, max_plate_nesting, data_dim, use_guide: bool,
          whole_data: bool | None = None) -> Layout:
    """Trace model (and guide) on one or two data points (all of them where the pair needs it,
    or where ``whole_data`` is True); raise clear errors for bad input."""
    require_density(model, guide if use_guide else None, x[:min(2, x.shape[0])])
    mtr, gtr, whole, xp = _probe_traces(model, guide, x, use_guide, whole_data)
    observed = list(vocab.observed_sites(mtr))
    latent = list(vocab.latent_sites(mtr))
    if not observed:
        raise ConfigError(
            "the model has no observed sample site: it must observe the data, e.g. "
            "pyro.sample('x', dist, obs=x)")
    if not latent:
        raise ConfigError("the model has no latent sample site; log p(x) needs no estimator")
    if gtr is not None:
        _check_guide_latents(mtr, gtr, latent)
    guessed = max(1, vocab.plate_nesting(mtr), vocab.plate_nesting(gtr) if gtr is not None else 0)
    if max_plate_nesting is None:
        max_plate_nesting = guessed
    else:
        max_plate_nesting = positive_int(max_plate_nesting, "max_plate_nesting")
        if max_plate_nesting < guessed:
            raise ConfigError(
                f"max_plate_nesting={max_plate_nesting} but the model/guide nest plates "
                f"{guessed} deep")
    if isinstance(data_dim, bool) or not isinstance(data_dim, int) or not (
        -max_plate_nesting <= data_dim <= -1
    ):
        raise ConfigError(
            f"data_dim must be a negative plate dimension in [-{max_plate_nesting}, -1], "
            f"got {data_dim!r}")
    _check_data_plate(mtr, gtr, latent, observed, data_dim, xp)
    supports = {name: mtr.nodes[name]["fn"].support for name in latent}
    return Layout(tuple(latent), tuple(observed), max_plate_nesting, data_dim, supports,
                  int(x[0].numel()), whole)


# ------------------------------------------------------------------------------------------
# per-data-point diagnostics
# ------------------------------------------------------------------------------------------
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
    """PSIS k̂ per row of log weights ``lw`` (B, K); NaN where not estimable.

    The tail and the fit of Vehtari et al. (PSIS, JMLR 2024), as :func:`arviz.psislw` computes
    them (tested to agree to 1e-12): the largest M = ceil(min(K/5, 3 sqrt(K))) weights above
    the cutoff, shifted by it, fitted by Zhang & Stephens' estimator with its weakly informative
    prior (:func:`gpd_shape`, the estimator of :func:`pyro.ops.stats.fit_generalized_pareto`
    batched over rows). No ArviZ import on the estimation path. Fewer than 5 weights above the
    cutoff (K < 21, or ties): NaN.
    """
    b, k = lw.shape
    out = torch.full((b,), math.nan, dtype=torch.float64)
    if k < 2:
        return out
    top = lw.max(-1).values
    ok = torch.isfinite(top) & ~torch.isnan(lw).any(-1)
    # weights equal to float precision (an exact guide) are ties too: k̂ is not defined
    ok &= (top - lw.min(-1).values) > 1e-9 * (1.0 + top.abs())
    m = int(math.ceil(min(k / 5.0, 3.0 * math.sqrt(k))))
    tiny = math.log(torch.finfo(torch.float64).tiny)
    x = (lw - top[:, None]).double()
    largest = torch.topk(x, min(m + 1, k), -1).values.flip(-1)  # ascending
    cutoff = largest[:, 0].clamp_min(tiny)
    n_tail = (largest > cutoff[:, None]).sum(-1)
    for n in torch.unique(n_tail[ok]).tolist():  # rows with ties have shorter tails
        rows = ok & (n_tail == n)
        if n > 4:
            tails = largest[rows, largest.shape[1] - n:].exp() - cutoff[rows, None].exp()
            out[rows] = gpd_shape(tails)
    out[~torch.isfinite(out)] = math.nan
    return out


def gpd_shape(x: torch.Tensor) -> torch.Tensor:
    """The shape k of a generalized Pareto distribution fitted to each row of ``x`` (R, n),
    sorted ascending: Zhang & Stephens (2009) with the weakly informative prior of Vehtari et
    al. (the estimator of :func:`pyro.ops.stats.fit_generalized_pareto`, one row per call
    there)."""
    n = x.shape[-1]
    m = 30 + int(math.sqrt(n))
    j = torch.arange(1, m + 1, dtype=x.dtype, device=x.device)
    bs = (1.0 - math.sqrt(m) / (j - 0.5).sqrt()) / (3.0 * x[:, int(n / 4 - 0.5), None])
    bs = bs + 1.0 / x[:, -1:]
    ks = torch.log1p(-bs.unsqueeze(-1) * x.unsqueeze(-2)).mean(-1)  # (R, m)
    log_lik = n * (torch.log(-bs / ks) - (ks + 1.0))
    w = 1.0 / torch.exp(log_lik.unsqueeze(-2) - log_lik.unsqueeze(-1)).sum(-1)
    w = torch.where(w > 1e-30, w, torch.zeros_like(w))
    b = (bs * w).sum(-1) / w.sum(-1)
    khat = torch.log1p(-b.unsqueeze(-1) * x).mean(-1)
    return khat * n / (n + 10.0) + 5.0 / (n + 10.0)


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
    """A tqdm bar on stderr; ``progress`` may be a label to show instead of ``desc``."""
    desc = progress if isinstance(progress, str) else desc
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
    amortize the per-call cost, at most 64 points (so that a block past the end of the data,
    whose latents are drawn for all of it, stays small)."""
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
    samples drawn after seeding the RNG with :func:`point_seed` (seed, block, particle block),
    so each point's weights depend only on (seed, its global index, K) and on nothing else: not
    on the batch size, nor on where ``x`` was cut (the shards of several workers), as long as
    sampling a site draws a fixed number of random numbers per element (reparameterized
    location-scale families, Bernoulli, ...). A block that runs past either end of ``x`` draws
    its latents for the whole block (positions outside ``x`` padded with copies of the nearest
    point: the same random numbers as a whole block), and the model, the work per sample, runs
    on the real rows only (``log_weight_fn(xb, kc, rows=slice)``; a function that returns None
    there has the whole block computed and the padding dropped). Those rows' weights equal the
    ones a whole block gives them bit for bit where the backend's matrix products compute each
    row independently of the number of rows (MKL on CPU; tested)."""
    n, b = x.shape[0], point_block(particle_chunk)
    group = max(1, STATS_BUDGET // (k * b))  # blocks whose weights are reduced together
    rows, pending = [], 0
    with kept_rng_state(x.device):
        for j, local, keep in point_blocks(n, index_offset, b):
            real = keep.nonzero().flatten().tolist()
            part = None if len(real) == b else slice(real[0], real[-1] + 1)
            start = j * b - index_offset
            xb = x[start:start + b] if part is None else x[local.to(x.device)]
            lw = torch.empty(len(real), k, dtype=torch.float64)
            for block, (k0, k1) in enumerate(chunk_ranges(k, particle_chunk)):
                seed_streams(point_seed(seed, j, block), x.device)
                w = None if part is None else log_weight_fn(xb, k1 - k0, rows=part)
                if w is None:
                    w = log_weight_fn(xb, k1 - k0)
                    w = w if part is None else w[:, part]
                lw[:, k0:k1] = w.to("cpu", torch.float64).T
            rows.append(lw)
            pending += 1
            bar.update(len(real) * k)
            if pending == group:
                on_rows(torch.cat(rows))
                rows, pending = [], 0
        if rows:
            on_rows(torch.cat(rows))


class CompiledLogWeights:
    """``log_weight_fn(xb, kc, rows=None)`` whose whole blocks (``rows=None``) run as one
    recorded and compiled tensor program per block shape
    (:func:`~ppl_vae.infer.compiled.capture_function` with ``random=True``: the same draws from
    the same generator state, so the seeded streams are unchanged; the arithmetic is fused, so
    log weights agree with the generic path to float rounding). The first shape is captured at
    once, a later one after it has come back :attr:`capture_after` times (a last, smaller
    chunk). A pair that cannot be recorded (a Python decision on a value), or a compile that
    fails, runs generic from then on with one warning, and :attr:`notice` says why.
    :attr:`seconds`: capture and compile time, with the first call of each graph."""

    capture_after = 3
    #: ``"inductor"`` (``torch.compile``) or None: replay the recorded operations (tests)
    backend = "inductor"

    def __init__(self, log_weight_fn):
        self.fn = log_weight_fn
        self.graphs: dict = {}
        self.seen: dict = {}
        self.seconds = 0.0
        self.notice: str | None = None

    def __call__(self, xb, kc, rows=None):
        if rows is not None:
            return self.fn(xb, kc, rows=rows)
        key = (tuple(xb.shape), xb.dtype, str(xb.device), kc)
        graph = self.graphs.get(key)
        if graph is None:
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.notice is not None or (self.graphs and self.seen[key] < self.capture_after):
                return self.fn(xb, kc)
            return self._first_call(key, xb, kc)
        return graph(xb)[0]

    def _first_call(self, key, xb, kc):
        from ppl_vae.infer.compiled import capture_function

        start, rng = time.perf_counter(), torch.get_rng_state()
        try:
            graph = capture_function(lambda t: (self.fn(t, kc),), xb, backend=self.backend,
                                     random=True)
            out = graph(xb)[0]  # Inductor compiles here
        except Exception as exc:  # not recordable, or torch.compile failed (no C++ compiler)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            self.notice = f"log weights not compiled: {reason}"
            import warnings

            warnings.warn(self.notice, stacklevel=3)
            torch.set_rng_state(rng)  # the generic block draws what the graph would have
            self.seconds += time.perf_counter() - start
            return self.fn(xb, kc)
        self.seconds += time.perf_counter() - start
        self.graphs[key] = graph
        return out

    def info(self) -> dict:
        return {"compiled": bool(self.graphs), "compile_seconds": round(self.seconds, 3),
                "compile_notice": self.notice}


def wants_compile(compile, rows: int) -> bool:
    """:func:`ppl_vae.infer.compiled.wants_compile` for ``rows`` = N x K log weights
    (``"auto"``: at least :data:`COMPILE_MIN_ROWS`)."""
    from ppl_vae.infer.compiled import wants_compile as wants

    return wants(compile, rows, COMPILE_MIN_ROWS)


def run_weights(name, log_weight_fn, x, k, batch_size, particle_chunk, layout, progress,
                return_log_weights, t0, seed=None, index_offset=0,
                compile=False) -> MarginalLikelihoodResult:
    """Log weights ``log_weight_fn(x_chunk, num_samples) -> (num_samples, chunk)`` for every
    point of ``x``, reduced to per-point estimates and diagnostics.

    ``seed=None``: chunks of ``batch_size`` points x ``particle_chunk`` samples drawn from the
    global RNG. With a ``seed``: per-point random streams (see :func:`_seeded_weights`);
    ``batch_size`` is then not used, and ``particle_chunk`` (default :data:`PARTICLE_BLOCK`)
    is part of the streams' definition. A pair that only runs on all points at once
    (``layout.whole_data``) is called on all of ``x``, its samples chunked; with a seed its
    streams then depend on (seed, ``index_offset``) only. Pyro's validation is switched off
    inside the loop: the probe trace has already checked shapes and supports, and the checks
    cost ~10% of the work. ``compile`` (True, False, ``"auto"``: :func:`wants_compile`): run
    the blocks through :class:`CompiledLogWeights`; the result's ``info`` then says
    ``compiled``, ``compile_seconds`` and ``compile_notice``.
    """
    n = x.shape[0]
    stats, kept = [], ([] if return_log_weights else None)
    compiled = None
    if wants_compile(compile, n * k):
        log_weight_fn = compiled = CompiledLogWeights(log_weight_fn)

    def on_rows(lw):
        stats.append(weight_stats(lw))
        if kept is not None:
            kept.append(lw)

    with progress_bar(progress, n * k, name, "sample") as bar, pyro.validation_enabled(False):
        if layout.whole_data:  # the pair runs on all points at once: chunk the samples only
            _, particle_chunk = default_chunks(k, n, particle_chunk, layout.num_dims * n, n,
                                               ELEMENT_BUDGET)
            with kept_rng_state(x.device) if seed is not None else nullcontext():
                if seed is not None:
                    seed_streams(point_seed(seed, index_offset, -1), x.device)
                _batched_weights(log_weight_fn, x, k, n, particle_chunk, bar, on_rows)
        elif seed is None:
            batch_size, particle_chunk = default_chunks(
                k, batch_size, particle_chunk, layout.num_dims, n, ELEMENT_BUDGET)
            _batched_weights(log_weight_fn, x, k, batch_size, particle_chunk, bar, on_rows)
        else:
            particle_chunk = min(k, particle_chunk or PARTICLE_BLOCK)
            _seeded_weights(log_weight_fn, x, k, particle_chunk, seed, index_offset, bar,
                            on_rows)
    info = compiled.info() if compiled is not None else None
    return collect_result(name, stats, k, layout, t0, info=info, log_weights=kept)
