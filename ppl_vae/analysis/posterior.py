r"""The exact posterior of a trained model and the gaps of its amortized guide.

:func:`nuts_posterior`
    samples of p(z | x_i) for one data point with the No-U-Turn sampler (Hoffman & Gelman 2014;
    :class:`pyro.infer.NUTS` inside :class:`pyro.infer.MCMC`) run on the model itself with its
    observed site given (``model(x_i)``: the data plate has size 1) — no model-specific code.
    Chains are run one after another (one process, one core), each from its own seed and started
    at the guide's posterior mean; ArviZ (:func:`arviz.summary` on
    :func:`arviz.from_dict`) gives the split R-hat and bulk/tail ESS per latent coordinate.

:func:`inference_gaps`
    the decomposition of Cremer, Li & Duvenaud (2018, "Inference suboptimality in variational
    autoencoders") for each data point::

        log p(x) - ELBO(q_amortized)   =   [log p(x) - ELBO(q*)]   +   [ELBO(q*) -
        ELBO(q_amortized)]
               inference gap                approximation gap            amortization gap

    q* is the best member of the variational family for this one x, found by SVI on that point
    alone: a :class:`LocalGaussianGuide` — a diagonal Normal per latent site (the family of
    :class:`~ppl_vae.guides.DiagonalNormalGuide`) — initialized at the amortized guide's output
    (its mean and standard deviation) and optimized with Adam on ``Trace_ELBO``. For guides of
    another family (IAF, hierarchical), q* is the best *mean-field Gaussian*, so the
    approximation gap is relative to that family (it can then be negative by up to the flow's
    advantage). Both ELBOs are Monte Carlo means of ``elbo_samples`` log weights
    (:func:`ppl_vae.marginal.importance_sampling`'s ``log_weight_mean``). log p(x) is importance
    sampling with K samples from the *mixture* ½ q_amortized + ½ q* (multiple importance
    sampling with the balance heuristic, Veach & Guibas 1995: w = p(x, z) / (½ q_a(z) + ½ q*(z)),
    half of the draws from each): unbiased for p(x) like IS with either proposal, but its weights
    are never more than twice those of the better proposal, so a poor amortized guide (large
    amortization gap) does not spoil log p(x) — the estimate from q_amortized alone, which
    ``importance_sampling`` gives, is reported too (``log_px_amortized``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from ppl_vae.errors import ConfigError, DataError
from ppl_vae.infer.importance import log_weights, replayed_log_q, sample_particles
from ppl_vae.poutine.plates import data_plate
from ppl_vae.poutine.trace import latent_sites, particle_plate, per_point, plate_nesting

__all__ = ["PosteriorSamples", "nuts_posterior", "guide_samples", "LocalGaussianGuide",
           "fit_local_guide", "GapResult", "inference_gaps", "PosteriorCheck", "check_posterior"]


def _one_point(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] != 1:
        raise DataError(f"x must hold exactly one data point, shape (1, ...), got "
                        f"{tuple(getattr(x, 'shape', ()))}")
    return x


@dataclass
class PosteriorSamples:
    """``samples[site]``: ``(chains, draws, *event_shape)`` NUTS draws of p(z | x) (data dim
    dropped); ``summary``: ArviZ's table (mean, sd, hdi, mcse, ess_bulk, ess_tail, r_hat) per
    coordinate; ``divergences`` per chain."""

    samples: dict
    summary: object
    divergences: list = field(default_factory=list)
    seconds: float = 0.0

    def flat(self) -> torch.Tensor:
        """All draws as one (chains * draws, total latent dim) tensor, sites concatenated."""
        parts = [v.reshape(v.shape[0] * v.shape[1], -1) for v in self.samples.values()]
        return torch.cat(parts, dim=-1)

    @property
    def r_hat_max(self) -> float:
        return float(self.summary["r_hat"].max())

    @property
    def ess_bulk_min(self) -> float:
        return float(self.summary["ess_bulk"].min())


def nuts_posterior(model, x, num_samples: int = 500, warmup: int = 300, chains: int = 2,
                   guide=None, seed: int = 0, target_accept: float = 0.8,
                   max_tree_depth: int = 8, progress: bool = False,
                   jit_compile: bool = False) -> PosteriorSamples:
    """NUTS draws of p(z | x) for one data point ``x`` (shape ``(1, D)``); see the module
    docstring. ``guide``: start every chain at the guide's posterior mean (else Pyro's default,
    uniform in [-2, 2] on the unconstrained space)."""
    import time
    import warnings

    import arviz
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_uniform, init_to_value

    from ppl_vae.analysis.generation import encode
    from ppl_vae.marginal.checks import require_density

    x = _one_point(x)
    for name, v in (("num_samples", num_samples), ("warmup", warmup), ("chains", chains)):
        if int(v) < (0 if name == "warmup" else 1):
            raise ConfigError(f"{name} must be >= {0 if name == 'warmup' else 1}, got {v}")
    require_density(model, guide, x)
    init = init_to_uniform
    if guide is not None:
        init = init_to_value(values={k: v.detach() for k, v in encode(guide, x, mean=True).items()})

    def conditioned():
        return model(x)

    t0 = time.perf_counter()
    draws, divergences = {}, []
    with torch.random.fork_rng(devices=[]):
        for c in range(int(chains)):
            pyro.set_rng_seed(int(seed) * 1000 + c)
            kernel = NUTS(conditioned, target_accept_prob=target_accept, max_plate_nesting=1,
                          max_tree_depth=max_tree_depth, init_strategy=init,
                          jit_compile=jit_compile, ignore_jit_warnings=True)
            mcmc = MCMC(kernel, num_samples=int(num_samples), warmup_steps=int(warmup),
                        num_chains=1, disable_progbar=not progress)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mcmc.run()
            for k, v in mcmc.get_samples().items():
                draws.setdefault(k, []).append(v.detach().squeeze(1))  # drop the data dim
            divergences.append(int(sum(len(v) for v in mcmc.diagnostics().get(
                "divergences", {}).values())) if hasattr(mcmc, "diagnostics") else 0)
    samples = {k: torch.stack(v) for k, v in draws.items()}  # (chains, draws, *event)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = arviz.from_dict(posterior={k: v.numpy() for k, v in samples.items()})
        summary = arviz.summary(idata)
    return PosteriorSamples(samples, summary, divergences, time.perf_counter() - t0)


@torch.no_grad()
def guide_samples(guide, x, num: int) -> dict:
    """``num`` draws z ~ q(z | x) for one data point, per site: ``(num, *event_shape)``."""
    x = _one_point(x)
    with particle_plate(int(num), 1):
        tr = poutine.trace(guide).get_trace(x)
    return {k: s["value"].reshape(int(num), *s["value"].shape[2:])
            for k, s in latent_sites(tr).items()}


class LocalGaussianGuide(nn.Module):
    """A non-amortized guide for *one* data point: an independent diagonal Normal
    N(loc_s, diag softplus(raw_s)^2) at every latent site s, inside a data plate of size 1.
    :meth:`from_guide` initializes it at an amortized guide's output for that point."""

    def __init__(self, shapes: dict, loc: dict | None = None, scale: dict | None = None):
        super().__init__()
        self.names = list(shapes)
        self.loc = nn.ParameterDict()
        self.raw_scale = nn.ParameterDict()
        for k, shape in shapes.items():
            lo = torch.zeros(shape) if loc is None else loc[k].detach().reshape(shape).clone()
            sc = torch.ones(shape) if scale is None else scale[k].detach().reshape(shape)
            self.loc[k] = nn.Parameter(lo.float())
            # softplus^-1(sc) = log(expm1(sc))
            self.raw_scale[k] = nn.Parameter(torch.log(torch.expm1(sc.clamp_min(1e-6))).float())

    @classmethod
    @torch.no_grad()
    def from_guide(cls, guide, x, num: int = 2000) -> "LocalGaussianGuide":
        """Start at q(z|x) of ``guide``: each site's mean and standard deviation where the
        distribution has them (a diagonal Gaussian guide: exactly its encoder's output), else
        the empirical ones of ``num`` guide draws (flows, sites conditioned on other sites)."""
        x = _one_point(x)
        tr = poutine.trace(guide).get_trace(x)
        draws = None
        loc, scale, shapes = {}, {}, {}
        for i, (k, s) in enumerate(latent_sites(tr).items()):
            shapes[k] = tuple(s["value"].shape[1:])
            try:
                if i > 0:  # may depend on earlier sampled sites: its marginal is not s["fn"]
                    raise NotImplementedError
                loc[k], scale[k] = s["fn"].mean[0], s["fn"].stddev[0]
            except NotImplementedError:
                draws = draws or guide_samples(guide, x, num)
                loc[k], scale[k] = draws[k].mean(0), draws[k].std(0)
        return cls(shapes, loc, scale)

    def forward(self, x=None, *args, **kwargs):
        with data_plate(1):
            for k in self.names:
                loc = self.loc[k].unsqueeze(0)
                scale = F.softplus(self.raw_scale[k]).unsqueeze(0)
                pyro.sample(k, dist.Normal(loc, scale).to_event(loc.dim() - 1))


def fit_local_guide(model, guide, x, steps: int = 2000, lr: float = 1e-2,
                    particles: int = 16) -> LocalGaussianGuide:
    """q* for one data point: :class:`LocalGaussianGuide` started at ``guide``'s output and
    optimized with Adam on the ``Trace_ELBO`` (``particles`` vectorized samples per step;
    the learning rate decays by 10x over the last half). Only q*'s parameters move."""
    from pyro.infer import Trace_ELBO

    x = _one_point(x)
    local = LocalGaussianGuide.from_guide(guide, x).to(x.device)
    elbo = Trace_ELBO(num_particles=int(particles), vectorize_particles=True,
                      max_plate_nesting=1)
    params = list(local.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    steps = int(steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 1.0 if t < steps // 2 else 10 ** (-(t - steps // 2) / max(1, steps // 2)))
    for _ in range(steps):
        loss = elbo.differentiable_loss(model, local, x)
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        sched.step()
    return local


@dataclass
class GapResult:
    """Per data point (tensors of shape (N,)): ``log_px`` (IS with K samples), ``elbo_amortized``,
    ``elbo_optimized`` (ELBO of q*), and the two gaps; :meth:`summary` averages them."""

    log_px: torch.Tensor
    elbo_amortized: torch.Tensor
    elbo_optimized: torch.Tensor
    num_samples: int
    steps: int
    log_px_amortized: torch.Tensor | None = None

    @property
    def approximation_gap(self) -> torch.Tensor:
        return self.log_px - self.elbo_optimized

    @property
    def amortization_gap(self) -> torch.Tensor:
        return self.elbo_optimized - self.elbo_amortized

    @property
    def inference_gap(self) -> torch.Tensor:
        return self.log_px - self.elbo_amortized

    def summary(self) -> dict:
        return {k: float(getattr(self, k).mean()) for k in (
            "log_px", "log_px_amortized", "elbo_amortized", "elbo_optimized", "approximation_gap",
            "amortization_gap", "inference_gap")}


def inference_gaps(model, guide, x, num_samples: int = 5000, elbo_samples: int | None = None,
                   steps: int = 2000, lr: float = 1e-2, particles: int = 16,
                   seed: int = 0) -> GapResult:
    """Approximation and amortization gaps of ``guide`` at every point of ``x`` (module
    docstring). ``num_samples``: K of the IS estimate of log p(x); ``elbo_samples`` (default K):
    samples of each ELBO estimate."""
    from ppl_vae.marginal import importance_sampling
    from ppl_vae.marginal.checks import require_density

    if x.dim() < 2 or x.shape[0] < 1:
        raise DataError(f"x must have shape (N, D) with N >= 1, got {tuple(x.shape)}")
    require_density(model, guide, x[:1])
    k = int(num_samples)
    ke = int(elbo_samples or k)
    out = {"log_px": [], "log_px_amortized": [], "elbo_amortized": [], "elbo_optimized": []}
    with torch.random.fork_rng(devices=[]):
        for i in range(x.shape[0]):
            xi = x[i:i + 1]
            pyro.set_rng_seed(int(seed) * 100_003 + i)
            res = importance_sampling(model, guide, xi, ke)
            out["log_px_amortized"].append(res.log_likelihood)
            out["elbo_amortized"].append(res.log_weight_mean)
            local = fit_local_guide(model, guide, xi, steps, lr, particles)
            with torch.no_grad():
                out["elbo_optimized"].append(importance_sampling(model, local, xi, ke)
                                             .log_weight_mean)
                out["log_px"].append(mixture_importance_sampling(model, [guide, local], xi, k))
    cat = {key: torch.cat(v) for key, v in out.items()}
    return GapResult(cat["log_px"], cat["elbo_amortized"], cat["elbo_optimized"], k, int(steps),
                     cat["log_px_amortized"])


@torch.no_grad()
def mixture_importance_sampling(model, proposals, x, num_samples: int) -> torch.Tensor:
    """log p̂(x) for one data point by importance sampling from the equal-weight mixture of
    ``proposals`` (guides with the same latent sites), balance-heuristic weights
    p(x, z) / (1/M Σ_m q_m(z)), ``num_samples`` // M draws from each. Returns shape (1,).
    The weights come from the importance-sampling engine (:mod:`ppl_vae.infer.importance`)."""
    x = _one_point(x)
    m = len(proposals)
    k = max(1, int(num_samples) // m)
    with torch.random.fork_rng(devices=[]):
        nesting = max(1, plate_nesting(poutine.trace(model).get_trace(x)))

    def reduce(t):
        return torch.broadcast_to(per_point(t, nesting, -1), (k, 1)).double()

    log_w = []
    for j, prop in enumerate(proposals):
        mtr, ptr = sample_particles(model, prop, (x,), {}, k, nesting)
        log_p, log_qj = log_weights(mtr, ptr, reduce)
        lq = [log_qj if i == j else replayed_log_q(other, ptr, (x,), {}, k, nesting, reduce)
              for i, other in enumerate(proposals)]
        log_w.append(log_p - (torch.logsumexp(torch.stack(lq), 0) - math.log(m)))
    lw = torch.cat(log_w).reshape(-1)
    return (torch.logsumexp(lw, 0) - math.log(lw.numel())).reshape(1)


@dataclass
class PosteriorCheck:
    """One data point: ``posterior`` (the NUTS run), ``nuts`` and ``guide`` (S, total latent dim)
    draws of p(z | x) and of q(z | x), all latent sites concatenated, and ``gaps``
    (:func:`inference_gaps`, or ``None``)."""

    posterior: PosteriorSamples
    nuts: torch.Tensor
    guide: torch.Tensor
    gaps: GapResult | None = None

    def summary(self) -> dict:
        """Diagnostics (R-hat, ESS, divergences), the two distributions' means and standard
        deviations, and the gaps' :meth:`GapResult.summary` where computed."""
        ps = self.posterior
        row = {"r_hat_max": ps.r_hat_max, "ess_bulk_min": ps.ess_bulk_min,
               "ess_tail_min": float(ps.summary["ess_tail"].min()),
               "divergences": int(sum(ps.divergences)), "nuts_seconds": ps.seconds,
               "posterior_mean": self.nuts.mean(0), "posterior_sd": self.nuts.std(0),
               "guide_mean": self.guide.mean(0), "guide_sd": self.guide.std(0)}
        if self.gaps is not None:
            row.update(self.gaps.summary())
        return row


def check_posterior(model, guide, x, num_samples: int = 500, warmup: int = 300,
                    chains: int = 2, seed: int = 0, gaps: bool = True, gap_samples: int = 5000,
                    gap_steps: int = 1000, progress: bool = False) -> PosteriorCheck:
    """The amortized guide against the exact posterior at one data point ``x`` (shape (1, D)):
    :func:`nuts_posterior` (chains started at the guide's mean), as many draws of the guide
    (:func:`guide_samples`), and with ``gaps`` the :func:`inference_gaps` (``gap_samples``
    importance samples, ``gap_steps`` SVI steps for q*). What ``ppl-vae posterior`` runs per
    index."""
    ps = nuts_posterior(model, x, num_samples=num_samples, warmup=warmup, chains=chains,
                        guide=guide, seed=seed, progress=progress)
    nuts = ps.flat()
    draws = guide_samples(guide, x, nuts.shape[0])
    q = torch.cat([v.reshape(v.shape[0], -1) for v in draws.values()], -1)
    result = None
    if gaps:
        result = inference_gaps(model, guide, x, num_samples=gap_samples, steps=gap_steps,
                                seed=seed)
    return PosteriorCheck(ps, nuts, q, result)
