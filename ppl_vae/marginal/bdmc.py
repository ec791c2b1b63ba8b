r"""Bidirectional Monte Carlo: a sandwich of log p(x) on data simulated from the model."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from ppl_vae.errors import ConfigError
from ppl_vae.marginal.ais import (
    RECORD_MIN_GRADIENTS,
    _anneal,
    _AnnealedTarget,
    _check_options,
    _latent_transforms,
    _schedule,
    annealed_importance_sampling,
)
from ppl_vae.marginal.common import (
    collect_result,
    kept_rng_state,
    probe,
    progress_bar,
    seed_streams,
    weight_stats,
)
from ppl_vae.marginal.result import MarginalLikelihoodResult
from ppl_vae.poutine.trace import latent_values

__all__ = ["BDMCResult", "bidirectional_monte_carlo", "simulate"]


@torch.no_grad()
def simulate(model, num_points: int, obs_site: str = "x", seed: int = 0):
    """``(x, z)``: ``num_points`` draws (z, x) ~ p(z) p(x | z) of ``model`` run without data
    (``model(None, batch_size=n)``, as ppl_vae's models and generation expect); ``z`` is the
    dictionary of latent values, an exact posterior sample for each x."""
    with torch.random.fork_rng(devices=[]):
        pyro.set_rng_seed(int(seed))
        try:
            tr = poutine.trace(model).get_trace(None, batch_size=int(num_points))
        except (TypeError, NotImplementedError) as exc:
            raise ConfigError(f"cannot simulate from the model ({exc}): pass x and z, the "
                              "simulated data and their latent values") from None
    if obs_site not in tr.nodes:
        raise ConfigError(f"the model has no sample site {obs_site!r} (pass obs_site=)")
    z = {k: v for k, v in latent_values(tr).items() if k != obs_site}
    return tr.nodes[obs_site]["value"].detach(), z


class _StartedTarget(_AnnealedTarget):
    """The annealed target whose chains start at given latent values (exact posterior
    samples) instead of draws from the initial distribution."""

    def __init__(self, *args, start: dict):
        super().__init__(*args)
        self.start = start

    def initial(self) -> dict:
        return {s.name: s.transform.inv(self.start[s.name]).expand(
            self.chains, *self.start[s.name].shape).detach().clone() for s in self.sites}


@dataclass
class BDMCResult:
    r"""The sandwich per simulated point: ``lower`` (forward AIS, a stochastic lower bound on
    log p(x)), ``upper`` (reverse AIS from the exact sample, a stochastic upper bound); both
    :class:`~ppl_vae.marginal.result.MarginalLikelihoodResult` s. ``x``, ``z``: the data and
    the latent values they were simulated with."""

    lower: MarginalLikelihoodResult
    upper: MarginalLikelihoodResult
    x: torch.Tensor
    z: dict

    @property
    def gap(self) -> torch.Tensor:
        """upper - lower per point: a stochastic bound on the error of either estimate."""
        return self.upper.log_likelihood - self.lower.log_likelihood

    def summary(self) -> dict:
        return {"n": self.lower.n, "chains": self.lower.num_samples,
                "num_steps": int(self.lower.info["num_steps"]),
                "lower": float(self.lower.log_likelihood.mean()),
                "lower_stderr": float(self.lower.log_likelihood.std() / self.lower.n ** 0.5)
                if self.lower.n > 1 else float("nan"),
                "upper": float(self.upper.log_likelihood.mean()),
                "upper_stderr": float(self.upper.log_likelihood.std() / self.upper.n ** 0.5)
                if self.upper.n > 1 else float("nan"),
                "gap": float(self.gap.mean()), "gap_max": float(self.gap.max()),
                "seconds": self.lower.seconds + self.upper.seconds}


def bidirectional_monte_carlo(model, guide, num_chains: int, num_steps: int, *, x=None, z=None,
                              num_points: int = 100, obs_site: str = "x", init: str = "guide",
                              schedule="sigmoid", num_leapfrog: int = 10,
                              step_size: float = 0.05, target_accept: float = 0.65,
                              seed: int = 0, progress: bool = False) -> BDMCResult:
    r"""Bidirectional Monte Carlo (BDMC) [1] on data simulated from the model.

    For :math:`(z^*, x) \sim p(z)\, p(x \mid z)`, :math:`z^*` is an exact sample of
    :math:`p(z \mid x)`. Forward AIS along :math:`f_t = q^{1-\beta_t}\, p(x, \cdot)^{\beta_t}`
    from :math:`q` (the guide, or the prior) gives :math:`\hat Z` with
    :math:`\mathbb{E}[\hat Z] = p(x)`, so :math:`\mathbb{E}\log\hat Z \le \log p(x)`. The same
    chain run backwards, :math:`\beta_T = 1 \to \beta_0 = 0`, started at :math:`z^*`, gives

    .. math::

        \log w^{\mathrm{rev}} = \sum_{t=T}^{1} (\beta_{t-1} - \beta_t)
            \big[\log p(x, z_t) - \log q(z_t)\big], \qquad
            \mathbb{E}[w^{\mathrm{rev}}] = 1 / p(x),

    so :math:`-\log \frac1C \sum_c w^{\mathrm{rev}}_c` is a stochastic **upper** bound. The two
    sandwich :math:`\log p(x)`; their gap bounds the error of both (Wu et al. [2] use it to
    measure how loose IWAE bounds and AIS are). Both directions use the same schedule, HMC
    transitions and step-size adaptation as
    :func:`~ppl_vae.marginal.ais.annealed_importance_sampling`.

    :param model: a Pyro model; unless ``x`` and ``z`` are given it is simulated from as
        ``model(None, batch_size=num_points)`` (:func:`simulate`).
    :param guide: the initial distribution q for ``init="guide"`` (``None`` with
        ``init="prior"``).
    :param int num_chains: C, chains per point in each direction.
    :param int num_steps: T, the number of temperatures.
    :param x: simulated data (with ``z``), instead of simulating.
    :param dict z: the latent values ``x`` was simulated with, by site.
    :param int num_points: how many points to simulate.
    :param str obs_site: the model's observed site.
    :param str init: ``"guide"`` or ``"prior"``.
    :param schedule: ``"sigmoid"``, ``"geometric"``, ``"linear"`` or explicit temperatures.
    :param int num_leapfrog: leapfrog steps per HMC transition.
    :param float step_size: the initial HMC step size.
    :param float target_accept: the acceptance rate the step size adapts towards.
    :param int seed: seeds the simulation and both directions.
    :param bool progress: progress bars on stderr.
    :returns: the lower and upper bounds per point.
    :rtype: BDMCResult

    **References**

    [1] R. Grosse, Z. Ghahramani, R. P. Adams, *Sandwiching the marginal likelihood using
    bidirectional Monte Carlo*, arXiv:1511.02543, 2015.

    [2] Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse, *On the Quantitative Analysis of
    Decoder-Based Generative Models*, ICLR 2017.

    Example::

        from ppl_vae.guides import DiagonalNormalGuide
        from ppl_vae.marginal.bdmc import bidirectional_monte_carlo
        from ppl_vae.models import VAEModel

        model = VAEModel(x_dim=6, latent_dim=2, hidden=(8,), likelihood="gaussian")
        guide = DiagonalNormalGuide(x_dim=6, latent_dim=2, hidden=(8,))
        res = bidirectional_monte_carlo(model, guide, num_chains=4, num_steps=20,
                                        num_points=5)
        res.lower.log_likelihood, res.upper.log_likelihood, res.gap
    """
    if (x is None) != (z is None):
        raise ConfigError("pass both x and z (the simulated data and its latent values), or "
                          "neither")
    if x is None:
        x, z = simulate(model, num_points, obs_site, seed)
    lower = annealed_importance_sampling(
        model, guide, x, num_chains, num_steps, init=init, schedule=schedule,
        num_leapfrog=num_leapfrog, step_size=step_size, target_accept=target_accept,
        batch_size=x.shape[0], particle_chunk=num_chains, progress=progress, seed=seed)
    upper = _reverse(model, guide, x, z, num_chains, num_steps, init, schedule, num_leapfrog,
                     step_size, target_accept, seed, progress)
    return BDMCResult(lower, upper, x, z)


@torch.no_grad()
def _reverse(model, guide, x, z, chains, num_steps, init, schedule, num_leapfrog, step_size,
             target_accept, seed, progress) -> MarginalLikelihoodResult:
    """Reverse AIS from the exact samples ``z``: the upper bound of the sandwich."""
    t0 = time.perf_counter()
    c, t_steps, num_leapfrog, _, _ = _check_options(
        guide, chains, num_steps, init, schedule, num_leapfrog, step_size, target_accept,
        1e-4, 0.5, None, None)
    layout = probe(model, guide, x, max_plate_nesting=None, data_dim=-1,
                   use_guide=init == "guide")
    missing = sorted(set(layout.latent) - set(z))
    if missing:
        raise ConfigError(f"z has no values for the latent sites {missing}")
    betas = _schedule(schedule, t_steps).flip(0)  # 1 -> 0
    sites = _latent_transforms(layout)
    n = x.shape[0]
    with progress_bar(progress, n * c * (betas.numel() - 1), "bdmc reverse", "step") as bar, \
            kept_rng_state(x.device):
        seed_streams(int(seed) + 1, x.device)
        target = _StartedTarget(model, guide, x, c, layout, sites, init, start=z)
        target.record = (betas.numel() - 1) * num_leapfrog >= RECORD_MIN_GRADIENTS
        logw, acc_total, eps = _anneal(target, sites, layout, betas, step_size, num_leapfrog,
                                       (float(target_accept), 1e-4, 0.5), bar, n)
    stats = weight_stats(logw.to("cpu").T)
    stats["log_likelihood"] = -stats["log_likelihood"]  # E[w_rev] = 1 / p(x)
    info = {"num_steps": betas.numel() - 1, "num_leapfrog": num_leapfrog, "init": init,
            "direction": "reverse", "step_size": eps.double().cpu()}
    return collect_result("bdmc-upper", [stats], c, layout, t0, info=info)
