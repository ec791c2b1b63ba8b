"""A Pyro-style ``assert_ok`` grid (after Pyro's ``tests/infer/test_valid_models.py``): every
registered objective, the log-likelihood estimators and the gradient statistics, on model/guide
pairs written in the idioms of Pyro's own examples. Each cell either works (finite loss, a
gradient for every parameter that should get one, finite estimates) or refuses with one line
that names the real reason."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from torch import nn
from torch.distributions import constraints

from ppl_vae.analysis.gradient_variance import gradient_statistics, parameter_groups
from ppl_vae.errors import ConfigError
from ppl_vae.infer.objectives import available_objectives, make_objective, objective_spec
from ppl_vae.marginal import importance_sampling, model_evidence, naive_monte_carlo

N, D, J, T = 5, 4, 2, 3
X = torch.bernoulli(torch.full((N, D), 0.4), generator=torch.Generator().manual_seed(0))
XS = torch.randn(N, T, D, generator=torch.Generator().manual_seed(1))  # sequences


class Nets(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.dec = nn.Linear(J, D)
        self.enc = nn.Linear(D, 2 * J)
        self.trans = nn.Linear(J, J)


def _q(nets, x):
    loc, raw = nets.enc(x).chunk(2, -1)
    return loc, nn.functional.softplus(raw) + 1e-3


# -- the pairs: (model, guide, data, traits) ---------------------------------------------------
def sized(nets):
    """Ours: a sized data plate, ``.to_event`` on latent and likelihood."""
    def model(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(J), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=nets.dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(*_q(nets, x)).to_event(1))
    return model, guide, X, set()


def unsized(nets):
    """ss_vae_M2: ``pyro.plate("data")`` without a size; the module declared in the model only."""
    def model(x):
        pyro.module("ss_vae", nets)
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), J), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=nets.dec(z)).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data"):
            pyro.sample("z", dist.Normal(*_q(nets, x)).to_event(1))
    return model, guide, X, set()


def scalar_latents(nets):
    """One scalar latent per point and per latent dimension in a plate inside the data plate
    (at dim -2: estimators are told ``data_dim=-2``)."""
    def model(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0], dim=-2):
            with pyro.plate("latent", J, dim=-1):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
            logits = nets.dec(z).unsqueeze(-2)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x.unsqueeze(-2))

    def guide(x):
        pyro.module("nets", nets)
        loc, scale = _q(nets, x)
        with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("latent", J, dim=-1):
            pyro.sample("z", dist.Normal(loc, scale))
    return model, guide, X, {"data at -2"}


def hierarchical(nets):
    """Two stochastic layers z2 -> z1 -> x, the guide bottom-up."""
    def model(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(J), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(nets.trans(z2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=nets.dec(z1)).to_event(1), obs=x)

    def guide(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(*_q(nets, x)).to_event(1))
            pyro.sample("z2", dist.Normal(nets.trans(z1), 0.5).to_event(1))
    return model, guide, X, set()


def local_params(nets):
    """sparse_gamma_def's non-amortized guide: one pyro.param per data point, plates of the
    fixed size N."""
    def model(x):
        pyro.module("dec", nets.dec)
        with pyro.plate("data", N):
            z = pyro.sample("z", dist.Normal(torch.zeros(J), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=nets.dec(z)).to_event(1), obs=x)

    def guide(x):
        loc = pyro.param("z_loc", torch.zeros(N, J))
        scale = pyro.param("z_scale", torch.ones(N, J), constraint=constraints.positive)
        with pyro.plate("data", N):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
    return model, guide, X, {"per-point params"}


def global_latent(nets):
    """A global offset shared by every point, with local latents (a Bayesian decoder bias)."""
    def model(x):
        pyro.module("nets", nets)
        m = pyro.sample("m", dist.Normal(torch.zeros(D), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(J), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=nets.dec(z) + m).to_event(1), obs=x)

    def guide(x):
        pyro.module("nets", nets)
        loc = pyro.param("m_loc", torch.zeros(D))
        pyro.sample("m", dist.Normal(loc, 0.3).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(*_q(nets, x)).to_event(1))
    return model, guide, X, {"global"}


def annealed_and_masked(nets):
    """``poutine.scale`` annealing of the latent and a mask on the likelihood."""
    def model(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=0.5):
                z = pyro.sample("z", dist.Normal(torch.zeros(J), 1.0).to_event(1))
            with poutine.mask(mask=x[:, 0] > 0.5):  # points with a dark first pixel only
                pyro.sample("x", dist.Bernoulli(logits=nets.dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=0.5):
            pyro.sample("z", dist.Normal(*_q(nets, x)).to_event(1))
    return model, guide, X, {"scaled"}


def markov(nets):
    """dmm's idiom: a latent chain z_1..z_T under ``pyro.markov`` per sequence, the module
    declared by model and guide."""
    def model(xs):
        pyro.module("dmm", nets)
        with pyro.plate("data", xs.shape[0]):
            z = xs.new_zeros(xs.shape[0], J)
            for t in pyro.markov(range(T)):
                z = pyro.sample(f"z_{t}", dist.Normal(nets.trans(z), 1.0).to_event(1))
                pyro.sample(f"x_{t}", dist.Normal(nets.dec(z), 1.0).to_event(1), obs=xs[:, t])

    def guide(xs):
        pyro.module("dmm", nets)
        with pyro.plate("data", xs.shape[0]):
            for t in pyro.markov(range(T)):
                pyro.sample(f"z_{t}", dist.Normal(*_q(nets, xs[:, t])).to_event(1))
    return model, guide, XS, set()


def discrete(nets):
    """A sigmoid-belief-network layer: Bernoulli latents, not reparameterizable."""
    def model(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=torch.zeros(J)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=nets.dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=nets.enc(x)[..., :J]).to_event(1))
    return model, guide, X, {"discrete"}


def enumerated(nets):
    """A per-point discrete label summed out by enumeration (config_enumerate in the model)."""
    @config_enumerate
    def model(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=torch.zeros(3)))
            z = pyro.sample("z", dist.Normal(torch.zeros(J), 1.0).to_event(1))
            logits = nets.dec(z) + (y.unsqueeze(-1) - 1.0)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(*_q(nets, x)).to_event(1))
    return model, guide, X, {"enumerated"}


PAIRS = [sized, unsized, scalar_latents, hierarchical, local_params, global_latent,
         annealed_and_masked, markov, discrete, enumerated]
OBJECTIVES = [f"{n}-3" if objective_spec(n).takes_k else n for n in available_objectives()]


def _refusal(name, traits):
    """Why ``name`` cannot run on a pair with ``traits`` (None: it must run)."""
    spec = objective_spec(name)
    if "discrete" in traits and not spec.can_infer_discrete:
        return "reparameteriz"
    return None


def assert_ok(pair_fn, name):
    nets = Nets()
    model, guide, x, traits = pair_fn(nets)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    objective = make_objective(name, x_dim=x[0].numel())
    reason = _refusal(name, traits)
    if "enumerated" in traits and not objective_spec(name).name == "enum":
        reason = None  # runs with y ~ p(y), or says in one line that y has no guide site
        try:
            loss = objective.loss_and_grads(model, guide, x)
        except ConfigError as exc:
            assert "has no guide site" in str(exc) and "'enum'" in str(exc)
            return
        assert math.isfinite(loss)
        return
    if objective_spec(name).name == "ws" and pair_fn is markov:
        reason = "observed"
    if reason is not None:
        with pytest.raises((ConfigError, NotImplementedError, ValueError), match=reason):
            objective.loss_and_grads(model, guide, x)
        return
    loss = objective.loss_and_grads(model, guide, x)
    assert math.isfinite(loss), (name, pair_fn.__name__, loss)
    grads = [p.grad for p in nets.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", OBJECTIVES)
@pytest.mark.parametrize("pair_fn", PAIRS, ids=lambda f: f.__name__)
def test_assert_ok(pair_fn, name):
    assert_ok(pair_fn, name)


@pytest.mark.parametrize("pair_fn", PAIRS, ids=lambda f: f.__name__)
def test_estimators_run_or_name_the_reason(pair_fn):
    nets = Nets()
    model, guide, x, traits = pair_fn(nets)
    pyro.clear_param_store()
    with torch.no_grad():
        guide(x)  # create the guide's params
    if "global" in traits:
        for run in (lambda: importance_sampling(model, guide, x, 4),
                    lambda: naive_monte_carlo(model, x, 4)):
            with pytest.raises(ConfigError, match="global latents"):
                run()
        res = model_evidence(model, guide, x, 8)
        assert res.log_likelihood.shape == (1,) and torch.isfinite(res.log_likelihood).all()
        return
    data_dim = -2 if "data at -2" in traits else -1
    if data_dim == -2:
        with pytest.raises(ConfigError, match="data plate"):  # told the wrong data_dim
            importance_sampling(model, guide, x, 4)
    res = importance_sampling(model, guide, x, 8, seed=0, data_dim=data_dim)
    assert res.log_likelihood.shape == (N,) and torch.isfinite(res.log_likelihood).all()
    naive = naive_monte_carlo(model, x, 8, seed=0, data_dim=data_dim)
    assert torch.isfinite(naive.log_likelihood).all()


def test_parameter_groups_come_from_the_program_not_from_who_declares_them():
    nets = Nets()
    model, guide, x, _ = unsized(nets)  # the guide declares nothing
    groups = parameter_groups(model, guide, x)
    assert {id(p) for p in groups["encoder"]} == {id(nets.enc.weight), id(nets.enc.bias)}
    assert {id(p) for p in groups["decoder"]} == {id(nets.dec.weight), id(nets.dec.bias)}
    model, guide, x, _ = hierarchical(nets)  # trans is used by model and guide: in both
    groups = parameter_groups(model, guide, x)
    enc, dec = {id(p) for p in groups["encoder"]}, {id(p) for p in groups["decoder"]}
    assert id(nets.trans.weight) in enc and id(nets.trans.weight) in dec
    assert id(nets.enc.weight) in enc - dec and id(nets.dec.weight) in dec - enc
    stats = gradient_statistics(model, guide, x, ["trace"], draws=3)["trace"]
    assert stats["num_parameters"]["encoder"] == sum(
        p.numel() for p in (*nets.enc.parameters(), *nets.trans.parameters()))
    assert math.isfinite(stats["total_variance"])


@pytest.mark.parametrize("pair_fn", [global_latent, scalar_latents], ids=lambda f: f.__name__)
def test_dreg_on_global_and_inner_plate_sites_estimates_the_iwae_gradient(pair_fn):
    """Unbiasedness where the weights are per particle (a global site) or the site has a further
    plate: the mean DReG guide gradient equals the mean IWAE guide gradient (same L_K)."""
    nets = Nets()
    model, guide, x, _ = pair_fn(nets)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with torch.no_grad():
        guide(x)
    params = [nets.enc.weight, *([pyro.param("m_loc").unconstrained()]
                                 if pair_fn is global_latent else [])]

    def draws(name, n=1500):
        objective = make_objective(name)
        out = []
        for _ in range(n):
            for p in params:
                p.grad = None
            objective.loss_and_grads(model, guide, x)
            out.append(torch.cat([p.grad.reshape(-1) for p in params]))
        return torch.stack(out)

    dreg, iwae = draws("dreg-3"), draws("iwae-3")
    se = (dreg.var(0) / len(dreg) + iwae.var(0) / len(iwae)).sqrt()
    z = (dreg.mean(0) - iwae.mean(0)) / se
    assert z.abs().max() < 4.5, z
