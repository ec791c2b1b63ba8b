"""The discrete-latent gradient estimators (issue 19) against exact answers.

On the small sigmoid belief network of ``test_sbn_gradients.py`` (J = 3 Bernoulli latents, N = 4
points) every expectation can be enumerated: the ELBO over the 2^J latent states, the
importance-weighted bound L_K over the (2^J)^K joint states of K particles. Each unbiased
estimator's mean gradient over G independent draws must match the exact gradient coordinate by
coordinate within 4.5 standard errors of its own mean (fixed seeds, so the outcome is
deterministic; see ``test_estimators.py`` for the argument). Plus: DisARM's encoder variance is
below ARM's (Dong et al. 2020, sec. 3: Rao-Blackwellization), the relaxed estimators' bias is
measured, and the estimators run on a guide that mixes Bernoulli and reparameterized sites.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

import ppl_vae
from ppl_vae.guides import BernoulliGuide
from ppl_vae.infer.objectives import is_biased, make_objective, objective_spec
from ppl_vae.models import SigmoidBeliefNetwork
from ppl_vae.poutine.plates import data_plate

# the small SBN of test_sbn_gradients.py
X_DIM, J = 5, 3
X = torch.tensor([[1.0, 0, 1, 1, 0], [0, 0, 1, 0, 1], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]])


def _pair(seed=0):
    torch.manual_seed(seed)
    model, guide = SigmoidBeliefNetwork(X_DIM, J), BernoulliGuide(X_DIM, J)
    with torch.no_grad():
        model.prior_logits.copy_(torch.tensor([0.5, -0.5, 0.2]))
    return model, guide


NEW = ["score-loo", "vimco", "arm", "disarm", "gumbel", "gumbel-st", "rebar", "relax"]


def _flat_grad(tensors, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(tensors, params)]).double()


def exact_bound(model, guide, x, k: int):
    """L_K summed over the points, enumerating the (2^J)^K joint states (L_1 = ELBO)."""
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=J)))
    log_q = dist.Bernoulli(logits=guide.encode(x).unsqueeze(1)).to_event(1).log_prob(states)
    log_lik = dist.Bernoulli(logits=model.decoder(states)).to_event(1).log_prob(x.unsqueeze(1))
    log_w = log_lik + model.prior().log_prob(states) - log_q  # (N, 2^J)
    idx = torch.tensor(list(itertools.product(range(len(states)), repeat=k)))  # (S^K, K)
    bound = torch.logsumexp(log_w[:, idx], -1) - math.log(k)
    return (log_q[:, idx].sum(-1).exp() * bound).sum()


def _draws(name, model, guide, x, draws, seed=0, **kwargs):
    params = list(model.parameters()) + list(guide.parameters())
    vectorize = kwargs.pop("vectorize", True)
    objective = make_objective(name, vectorize_particles=vectorize, **kwargs.pop("options", {}))
    pyro.set_rng_seed(seed)
    out = []
    for _ in range(draws):
        for p in params:
            p.grad = None
        objective.loss_and_grads(model, guide, x, **kwargs)
        out.append(-torch.cat([p.grad.reshape(-1) for p in params]).double())
    return torch.stack(out).numpy()


def _z_scores(g, exact):
    se = g.std(0, ddof=1) / np.sqrt(len(g))
    return (g.mean(0) - exact) / np.maximum(se, 1e-12)


# (name, bound K it estimates the gradient of, draws, vectorized, num_data)
UNBIASED = [
    ("score-loo-2", 1, 400, True, None),
    ("score-loo-3", 1, 300, False, 12),
    ("vimco-2", 2, 400, True, None),
    ("vimco-3", 3, 300, False, 12),
    ("arm", 1, 400, True, None),
    ("arm-2", 1, 300, False, 12),
    ("disarm", 1, 400, True, None),
    ("disarm-3", 1, 300, True, 12),
    ("rebar", 1, 300, True, None),
    ("rebar-2", 1, 150, False, 12),
    ("relax", 1, 300, True, None),
    ("relax-2", 1, 150, False, 12),
]


@pytest.mark.parametrize("name, k, draws, vectorize, num_data", UNBIASED,
                         ids=[f"{u[0]}-{'vec' if u[3] else 'loop'}-{u[4] or 'full'}"
                              for u in UNBIASED])
def test_unbiased_estimators_match_the_enumerated_gradient(name, k, draws, vectorize, num_data):
    model, guide = _pair()
    params = list(model.parameters()) + list(guide.parameters())
    scale = 1.0 if num_data is None else num_data / len(X)
    exact = scale * _flat_grad(exact_bound(model, guide, X, k), params).numpy()
    kwargs = {} if num_data is None else {"num_data": num_data}
    g = _draws(name, model, guide, X, draws, vectorize=vectorize, **kwargs)
    z = _z_scores(g, exact)
    assert (np.abs(z) <= 4.5).all(), f"{name}: {np.round(z, 2)}"


def test_loss_is_the_bound_estimate():
    model, guide = _pair()
    for name, k in (("score-loo-2", 1), ("arm", 1), ("disarm-2", 1), ("vimco-3", 3),
                    ("gumbel-st", 1)):
        objective = make_objective(name)
        pyro.set_rng_seed(0)
        est = -np.mean([objective.loss(model, guide, X) for _ in range(200)])
        exact = float(exact_bound(model, guide, X, k).detach())
        assert est == pytest.approx(exact, abs=0.2), name


@pytest.fixture(scope="module")
def arm_disarm():
    model, guide = _pair()
    n_dec = sum(p.numel() for p in model.parameters())
    return {n: _draws(n, model, guide, X, 500, seed=3)[:, n_dec:] for n in ("arm", "disarm")}


def test_disarm_variance_is_below_arm_per_encoder_coordinate(arm_disarm):
    var_arm, var_disarm = arm_disarm["arm"].var(0), arm_disarm["disarm"].var(0)
    assert var_disarm.sum() < var_arm.sum()
    # per coordinate, up to the sampling error of 500-draw variances
    assert np.mean(var_disarm <= var_arm) >= 0.75, np.round(var_disarm / var_arm, 2)


def _bias(name, temperature, draws):
    model, guide = _pair()
    params = list(model.parameters()) + list(guide.parameters())
    exact = _flat_grad(exact_bound(model, guide, X, 1), params).numpy()
    g = _draws(name, model, guide, X, draws, seed=5, options={"temperature": temperature})
    return g.mean(0) - exact, _z_scores(g, exact)


def test_relaxed_estimators_are_biased_and_flagged():
    for name in ("gumbel", "gumbel-st"):
        assert objective_spec(name).biased and make_objective(name).biased
    assert not any(objective_spec(n).biased for n in ("score-loo", "vimco", "arm", "disarm",
                                                      "rebar"))
    # at a large temperature the bias is far outside the Monte Carlo error (|z| > 5 in one of
    # 41 coordinates: p ~ 2e-5 for an unbiased estimator)
    for name in ("gumbel", "gumbel-st"):
        _, z = _bias(name, 2.0, 300)
        assert np.abs(z).max() > 5, (name, np.round(z, 1))


def test_concrete_bias_shrinks_as_the_temperature_goes_to_zero():
    """The binary Concrete relaxation's gradient converges to the ELBO gradient as T -> 0
    (Maddison et al. 2017), in expectation: the measured bias at T = 0.1 is below T = 2's."""
    big, _ = _bias("gumbel", 2.0, 300)
    small, _ = _bias("gumbel", 0.1, 600)
    assert np.linalg.norm(small) < 0.5 * np.linalg.norm(big), (np.linalg.norm(small),
                                                               np.linalg.norm(big))


class MixedModel(PyroModule):
    """c ~ N(0, I_2), z ~ Bern(s) (2 bits), y ~ Bern(t) (1 bit), x ~ Bern(W [z, y, c] + b)."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.tensor([[0.8, -0.5, 0.3, 0.4, -0.2],
                                            [-0.6, 0.7, -0.4, 0.1, 0.5],
                                            [0.2, 0.3, 0.9, -0.7, 0.3]]))
        self.b = nn.Parameter(torch.tensor([0.1, -0.2, 0.3]))
        self.s = nn.Parameter(torch.tensor([0.3, -0.4]))
        self.t = nn.Parameter(torch.tensor([0.2]))

    def forward(self, x, num_data=None):
        with data_plate(x.shape[0], num_data):
            c = pyro.sample("c", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            z = pyro.sample("z", dist.Bernoulli(logits=self.s).to_event(1))
            y = pyro.sample("y", dist.Bernoulli(logits=self.t).to_event(1))
            h = torch.cat([z, y, c], -1) @ self.W.T + self.b
            pyro.sample("x", dist.Bernoulli(logits=h).to_event(1), obs=x)


class MixedGuide(PyroModule):
    """q(c|x) reparameterized Gaussian first, then q(z|x), q(y|x) Bernoulli (logits from x)."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[0.3, -0.2, 0.1], [0.1, 0.4, -0.3]]))
        self.log_s = nn.Parameter(torch.tensor([-0.5, -0.3]))
        self.B = nn.Parameter(torch.tensor([[0.5, -0.3, 0.2], [-0.2, 0.1, 0.4], [0.3, 0.3, -0.5]]))

    def forward(self, x, num_data=None):
        with data_plate(x.shape[0], num_data):
            pyro.sample("c", dist.Normal(x @ self.A.T, self.log_s.exp()).to_event(1))
            logits = x @ self.B.T
            pyro.sample("z", dist.Bernoulli(logits=logits[..., :2]).to_event(1))
            pyro.sample("y", dist.Bernoulli(logits=logits[..., 2:]).to_event(1))


X3 = X[:, :3]


@pytest.fixture(scope="module")
def mixed_reference():
    """The ELBO gradient of the mixed pair from Trace_ELBO (score function for the Bernoulli
    sites, pathwise for the Gaussian one): 400 draws of 100 vectorized particles."""
    model, guide = MixedModel(), MixedGuide()
    return _draws("trace", model, guide, X3, 400, seed=8, options={"num_particles": 100})


@pytest.mark.parametrize("name", ["score-loo-2", "arm", "disarm", "rebar", "relax", "gumbel-st"])
def test_estimators_on_a_guide_mixing_bernoulli_and_gaussian_sites(mixed_reference, name):
    model, guide = MixedModel(), MixedGuide()
    g = _draws(name, model, guide, X3, 400, seed=9, options={"temperature": 1.0}
               if name.startswith("gumbel") else {})
    ref = mixed_reference
    se = np.sqrt(g.var(0, ddof=1) / len(g) + ref.var(0, ddof=1) / len(ref))
    z = (g.mean(0) - ref.mean(0)) / se
    if name.startswith("gumbel"):
        assert np.abs(z).max() > 4  # biased
    else:
        assert (np.abs(z) <= 4.5).all(), f"{name}: {np.round(z, 2)}"


def test_registry_flags_options_and_refusals():
    from ppl_vae.infer.objectives import available_objectives, comparison_objectives

    assert available_objectives()[-len(NEW):] == NEW
    assert all(objective_spec(n).can_infer_discrete for n in NEW)
    assert not any(n.split("-")[0] in ("vimco", "arm") for n in comparison_objectives(5))
    assert make_objective("vimco").elbo.num_particles == 2
    assert make_objective("disarm-4").elbo.num_particles == 4
    assert make_objective("gumbel-st-3").elbo.num_particles == 3
    assert make_objective("gumbel-st").elbo.straight_through
    assert make_objective("gumbel", temperature=0.3).elbo.temperature == 0.3
    assert make_objective("rebar", eta=0.5).elbo.eta == 0.5
    relax = make_objective("relax-2", eta=0.5, temperature=0.3, control_hidden=(16,))
    assert relax.elbo.num_particles == 2 and relax.modules["control_variate"] is \
        relax.elbo.control_variate
    assert float(relax.elbo.eta.detach()) == 0.5
    assert abs(float(relax.elbo.temperature.detach()) - 0.3) < 1e-6
    assert make_objective("relax", control_network=False).modules["control_variate"].net is None
    assert is_biased(make_objective("gumbel").elbo) and not is_biased(pyro.infer.Trace_ELBO)
    for name, options, message in (("vimco-1", {}, "at least 2"), ("score-loo-1", {}, "at least 2"),
                                   ("gumbel", {"temperature": 0.0}, "temperature"),
                                   ("arm", {"temperature": 1.0}, "takes no option"),
                                   ("relax", {"variance": "theta"}, "variance"),
                                   ("relax", {"temperature": -1.0}, "temperature")):
        with pytest.raises(ppl_vae.ConfigError, match=message):
            make_objective(name, **options)


def test_antithetic_estimators_refuse_dependent_bernoulli_layers():
    class Chain(PyroModule):  # z2's logits depend on z1: not one factorized layer
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.5))

        def forward(self, x):
            with data_plate(x.shape[0]):
                z1 = pyro.sample("z1", dist.Bernoulli(logits=torch.zeros(1)).to_event(1))
                pyro.sample("z2", dist.Bernoulli(logits=self.w * z1).to_event(1))

    def model(x):
        with data_plate(x.shape[0]):
            pyro.sample("z1", dist.Bernoulli(0.5 * torch.ones(1)).to_event(1))
            pyro.sample("z2", dist.Bernoulli(0.5 * torch.ones(1)).to_event(1))

    pyro.set_rng_seed(0)
    with pytest.raises(NotImplementedError, match="depend on"):
        for _ in range(20):  # the pair's logits differ as soon as z1 differs in one point
            make_objective("disarm").loss(model, Chain(), torch.zeros(8, 1))


# --- RELAX: the learned control variate ---------------------------------------------------------


def _relax_draws(objective, model, guide, x, draws, seed):
    params = list(model.parameters()) + list(guide.parameters())
    pyro.set_rng_seed(seed)
    out = []
    for _ in range(draws):
        for p in params:
            p.grad = None
        objective.loss_and_grads(model, guide, x)
        out.append(-torch.cat([p.grad.reshape(-1) for p in params]).double())
    return torch.stack(out).numpy()


def _train_control_variate(objective, model, guide, x, steps, seed=2, lr=1e-2):
    """Adam on the control variate's variance gradient alone, model and guide held fixed."""
    cv = objective.modules["control_variate"]
    objective.loss_and_grads(model, guide, x)  # the lazy first layer gets its size
    opt = torch.optim.Adam(cv.parameters(), lr=lr)
    pyro.set_rng_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        objective.loss_and_grads(model, guide, x)
        opt.step()
    for p in model.parameters():
        p.grad = None
    for p in guide.parameters():
        p.grad = None
    for p in cv.parameters():
        p.requires_grad_(False)  # fixed from now on: i.i.d. draws, no variance pass


@pytest.mark.parametrize("variance", ["parameters", "logits"])
def test_relax_control_variate_learns_to_lower_the_variance_and_stays_unbiased(variance):
    """From eta = 0 (plain REINFORCE) the variance objective trains eta, lambda and the network:
    the encoder-gradient variance falls by more than 10x, and the estimate with the trained
    control variate (network output no longer zero) matches the enumerated gradient."""
    model, guide = _pair()
    params = list(model.parameters()) + list(guide.parameters())
    exact = _flat_grad(exact_bound(model, guide, X, 1), params).numpy()
    n_dec = sum(p.numel() for p in model.parameters())
    objective = make_objective("relax", eta=0.0, control_hidden=(16,), variance=variance)
    before = _relax_draws(objective, model, guide, X, 200, seed=1)
    _train_control_variate(objective, model, guide, X, 300)
    cv = objective.modules["control_variate"]
    assert float(cv.net[-1].weight.abs().sum()) > 0 and float(cv.eta) > 0.1
    after = _relax_draws(objective, model, guide, X, 400, seed=3)
    var_before, var_after = before[:, n_dec:].var(0).sum(), after[:, n_dec:].var(0).sum()
    assert var_after < 0.1 * var_before, (var_before, var_after)
    z = _z_scores(after, exact)
    assert (np.abs(z) <= 4.5).all(), np.round(z, 2)


@pytest.mark.parametrize("variance", ["parameters", "logits"])
def test_relax_variance_gradient_matches_finite_differences(variance):
    """On one fixed draw (same seed), in float64: d ||g_phi||^2 / d psi from the double
    backward pass against central differences, for lambda, eta and network weights; and the
    reported ||g_phi||^2 is the squared norm of the guide-parameter gradient the call
    accumulated (``parameters``) or of the per-point logits gradient (``logits``, recovered
    from the linear encoder's weight and bias gradients)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model, guide = _pair()
        model.double(), guide.double()
        x = X.double()
        objective = make_objective("relax", control_hidden=(8,), variance=variance)
        cv = objective.modules["control_variate"]
        objective.loss_and_grads(model, guide, x)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in cv.net.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        everything = [*model.parameters(), *guide.parameters(), *cv.parameters()]

        def run():
            for p in everything:
                p.grad = None
            pyro.set_rng_seed(5)
            objective.loss_and_grads(model, guide, x)
            return objective.elbo.last_variance

        run()
        auto = [p.grad.clone() for p in cv.parameters()]
        weight, bias = guide.encoder[0].weight.grad, guide.encoder[0].bias.grad
        if variance == "parameters":
            expected = float(weight.pow(2).sum() + bias.pow(2).sum())
        else:  # [dW | db] = G^T [X | 1] with G the (N, J) logits gradient
            design = torch.cat([x, torch.ones(len(x), 1)], 1)
            g = torch.linalg.lstsq(design.T, torch.cat([weight, bias[:, None]], 1).T).solution
            expected = float(g.pow(2).sum())
        assert objective.elbo.last_variance == pytest.approx(expected, rel=1e-9)
        named = dict(cv.named_parameters())
        index = {n: i for i, n in enumerate(named)}
        for name, where in (("log_temperature", ()), ("eta", ()), ("net.0.weight", (0, 1)),
                            ("net.2.bias", (0,))):
            p, eps = named[name], 1e-6
            with torch.no_grad():
                p[where] += eps
            up = run()
            with torch.no_grad():
                p[where] -= 2 * eps
            down = run()
            with torch.no_grad():
                p[where] += eps
            fd = (up - down) / (2 * eps)
            assert float(auto[index[name]][where]) == pytest.approx(fd, rel=1e-5, abs=1e-7), name
    finally:
        torch.set_default_dtype(old)
