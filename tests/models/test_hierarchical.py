"""Hierarchical VAE (models/hierarchical.py), its guides (guides/hierarchical.py), active units.

Ground truths used here:

* depth 1 = the plain VAE: with the same weights, HierarchicalVAE/BottomUpGuide give the same
  log p(x, z), log q(z|x) and ELBO as VAEModel/DiagonalNormalGuide (to float32 round-off);
* a linear-Gaussian two-layer model, z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, s1^2 I),
  x | z1 ~ N(W z1 + b, s^2 I), whose marginal is x ~ N(W a + b, W (A A^T + s1^2 I) W^T + s^2 I):
  the model's joint density, the marginal-likelihood estimators of ppl_vae.marginal and the
  analytic-KL objective are checked against it;
* active units on guides whose posterior means are set by hand, so A_u is known exactly.
"""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import assert_close
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from ppl_vae import TrainConfig, build_model_and_guide, make_objective
from ppl_vae.analysis.active_units import active_units
from ppl_vae.analysis.generation import interpolate, reconstruct, sample_images
from ppl_vae.errors import ConfigError
from ppl_vae.guides import BottomUpGuide, DiagonalNormalGuide, TopDownGuide, precision_weighted
from ppl_vae.infer.objectives import available_objectives
from ppl_vae.models import GaussianConditional, GaussianLikelihood, HierarchicalVAE, VAEModel
from ppl_vae.nn import MLP
from ppl_vae.poutine.handlers import ScaleLatents

MIN_SCALE = 1e-3


def _log_joint(model, x, values: dict) -> torch.Tensor:
    tr = poutine.trace(poutine.condition(model, data=values)).get_trace(x)
    return tr.log_prob_sum()


def _guide_trace(guide, x, seed=0):
    pyro.set_rng_seed(seed)
    return poutine.trace(guide).get_trace(x)


# ------------------------------------------------------------------------------------------
# depth 1 is the plain VAE
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_depth_one_reproduces_plain_vae_log_probs(likelihood):
    torch.manual_seed(0)
    x_dim, j, hidden = 12, 3, (16, 8)
    spec = {"name": likelihood, **({"min_scale": 0.05} if likelihood == "gaussian" else {})}
    vae = VAEModel(x_dim, j, tuple(reversed(hidden)), spec, "relu")
    q = DiagonalNormalGuide(x_dim, j, hidden, "relu")
    hvae = HierarchicalVAE.mlp(x_dim, [j], hidden, spec, activation="relu")
    hq = BottomUpGuide.mlp(x_dim, [j], hidden, activation="relu",
                           min_scale=DiagonalNormalGuide.min_scale)
    hvae.decoder.load_state_dict(vae.decoder.state_dict())
    hq.layers[0].net.load_state_dict(q.encoder.state_dict())
    assert hvae.sites == ("z1",) and hvae.latent_dims == (j,)

    x = torch.rand(7, x_dim)
    if likelihood == "bernoulli":
        x = torch.bernoulli(x)
    tq, thq = _guide_trace(q, x), _guide_trace(hq, x)
    z = tq.nodes["z"]["value"]
    assert_close(thq.nodes["z1"]["value"], z, atol=1e-6, msg="same seed, same sample")
    assert_close(thq.log_prob_sum(), tq.log_prob_sum(), atol=1e-4, rtol=1e-6, msg="log q")
    assert_close(_log_joint(hvae, x, {"z1": z}), _log_joint(vae, x, {"z": z}), atol=1e-4,
                 rtol=1e-6, msg="log p(x, z)")
    losses = []
    for m, g in ((vae, q), (hvae, hq)):
        pyro.set_rng_seed(1)
        losses.append(Trace_ELBO(num_particles=4, vectorize_particles=True,
                                 max_plate_nesting=1).loss(m, g, x))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_builder_keeps_plain_vae_and_its_weight_names_for_one_bottom_up_layer():
    model, guide = build_model_and_guide(TrainConfig(latent_dims=(3,), hidden=(8,)), 10)
    assert isinstance(model, VAEModel) and isinstance(guide, DiagonalNormalGuide)
    assert all(k.startswith("decoder.") for k in model.state_dict())
    assert all(k.startswith("encoder.") for k in guide.state_dict())
    model, guide = build_model_and_guide(
        TrainConfig(latent_dims=(3,), hidden=(8,), guide="top-down"), 10)
    assert isinstance(model, HierarchicalVAE) and isinstance(guide, TopDownGuide)


# ------------------------------------------------------------------------------------------
# the linear-Gaussian two-layer model: closed-form p(x), and guides that are exact
# ------------------------------------------------------------------------------------------
def _gaussian_linear(weight, loc_bias, scale) -> GaussianConditional:
    """N(weight @ u + loc_bias, diag scale^2) as a GaussianConditional with an nn.Linear net."""
    out, inp = weight.shape
    lin = nn.Linear(inp, 2 * out)
    raw = torch.log(torch.expm1(torch.as_tensor(scale, dtype=torch.float32) - MIN_SCALE))
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:out] = weight
        lin.bias.copy_(torch.cat([loc_bias, raw.expand(out)]))
    return GaussianConditional(lin, out, min_scale=MIN_SCALE)


class LinearGaussian:
    """z2 ~ N(0, I_2); z1 | z2 ~ N(A z2 + a, s1^2 I_3); x | z1 ~ N(W z1 + b, s^2 I_4).

    Marginal: x ~ N(W a + b, W (A A^T + s1^2 I) W^T + s^2 I) (a full covariance).
    A = [[1.5, 0], [0, -0.8], [0, 0]] and W = Q diag(2, 1.2, 0.7) with orthonormal columns Q make
    every exact conditional the guides need diagonal — p(z1 | x), p(z2 | z1), p(z2 | x),
    p(z1 | z2, x) — with means linear in the conditioning variables, so both guide families
    contain the exact posterior (built by :meth:`exact_bottom_up` / :meth:`exact_top_down`).
    """

    d2, d1, dx, s1, s = 2, 3, 4, 0.8, 0.5

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.A = torch.tensor([[1.5, 0.0], [0.0, -0.8], [0.0, 0.0]])
        self.a = torch.randn(self.d1, generator=g)
        q, _ = torch.linalg.qr(torch.randn(self.dx, self.d1, generator=g))
        self.w = torch.tensor([2.0, 1.2, 0.7])
        self.W = q * self.w
        self.b = torch.randn(self.dx, generator=g)

    def model(self) -> HierarchicalVAE:
        """Composed from Python, the way a user writes p(x | z1) p(z1 | z2) p(z2)."""
        decoder = _gaussian_linear(self.W, self.b, self.s).net
        model = HierarchicalVAE(
            decoder=decoder, likelihood=GaussianLikelihood(min_scale=MIN_SCALE),   # p(x | z1)
            conditionals=[_gaussian_linear(self.A, self.a, self.s1)],             # p(z1 | z2)
            top_dim=self.d2,                                                      # p(z2)
        )
        return model.requires_grad_(False)

    @property
    def cov_z1(self) -> torch.Tensor:
        return self.A @ self.A.T + self.s1**2 * torch.eye(self.d1)

    def sample_x(self, n: int, seed: int) -> torch.Tensor:
        """n independent draws from the marginal p(x), from their own seed."""
        px = self.marginal()
        eps = torch.randn(n, self.dx, generator=torch.Generator().manual_seed(seed))
        return px.loc + eps @ px.scale_tril.T

    def marginal(self) -> dist.MultivariateNormal:
        cov = self.W @ self.cov_z1 @ self.W.T + self.s**2 * torch.eye(self.dx)
        return dist.MultivariateNormal(self.W @ self.a + self.b, covariance_matrix=cov)

    def exact_bottom_up(self) -> BottomUpGuide:
        """q(z1 | x) = p(z1 | x), q(z2 | z1) = p(z2 | z1) (= p(z2 | z1, x))."""
        v1 = self.cov_z1.diagonal()
        p1 = 1 / v1 + self.w**2 / self.s**2                     # precision of p(z1 | x)
        q1 = _gaussian_linear(torch.diag(1 / (self.s**2 * p1)) @ self.W.T,
                              (self.a / v1 - self.W.T @ self.b / self.s**2) / p1, p1.rsqrt())
        p2 = 1 + (self.A.T @ self.A).diagonal() / self.s1**2     # precision of p(z2 | z1)
        q2 = _gaussian_linear(torch.diag(1 / (self.s1**2 * p2)) @ self.A.T,
                              -(self.A.T @ self.a) / (self.s1**2 * p2), p2.rsqrt())
        return BottomUpGuide([q1, q2]).requires_grad_(False)

    def exact_top_down(self, model) -> TopDownGuide:
        """Identity deterministic path (d1 = d2 = x). Data term of z1: N((W^T W)^-1 W^T (x - b),
        s^2 (W^T W)^-1), so precision weighting with p(z1 | z2) gives p(z1 | z2, x) exactly;
        q(z2 | x) = p(z2 | x) by Gaussian conditioning."""
        h1 = _gaussian_linear(torch.diag(self.w**-2) @ self.W.T,
                              -torch.diag(self.w**-2) @ self.W.T @ self.b, self.s / self.w)
        px = self.marginal()
        cross = self.A.T @ self.W.T                              # Cov(z2, x)
        gain = cross @ torch.linalg.inv(px.covariance_matrix)
        cov2 = torch.eye(self.d2) - gain @ cross.T
        assert (cov2 - torch.diag(cov2.diagonal())).abs().max() < 1e-5
        h2 = _gaussian_linear(gain, -gain @ px.loc, cov2.diagonal().sqrt())
        return TopDownGuide(model, [nn.Identity(), nn.Identity()], [h1, h2]).requires_grad_(False)

    def guide(self, kind, model):
        return self.exact_bottom_up() if kind == "bottom-up" else self.exact_top_down(model)


@pytest.fixture(scope="module")
def linear_gaussian():
    lg = LinearGaussian()
    x = lg.sample_x(40, seed=1)
    return lg, x


def test_linear_gaussian_model_joint_density_is_the_stated_one(linear_gaussian):
    lg, x = linear_gaussian
    model = lg.model()
    z2 = torch.randn(len(x), lg.d2)
    z1 = torch.randn(len(x), lg.d1)
    expected = (dist.Normal(0.0, 1.0).log_prob(z2).sum()
                + dist.Normal(z2 @ lg.A.T + lg.a, lg.s1).log_prob(z1).sum()
                + dist.Normal(z1 @ lg.W.T + lg.b, lg.s).log_prob(x).sum())
    assert_close(_log_joint(model, x, {"z1": z1, "z2": z2}), expected, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bottom-up", "top-down"])
def test_importance_sampling_with_the_exact_guide_gives_the_closed_form_marginal(
        linear_gaussian, kind):
    """q = p(z1, z2 | x): every weight p(x, z)/q(z|x) equals p(x), so IS (K = 50) must return
    the closed-form log p(x) to float32 round-off (1e-4 nats) with zero log-weight variance."""
    marginal = pytest.importorskip("ppl_vae.marginal")
    lg, x = linear_gaussian
    model = lg.model()
    guide = lg.guide(kind, model)
    res = marginal.importance_sampling(model, guide, x, num_samples=50)
    assert res.log_likelihood.shape == (len(x),)
    assert_close(res.log_likelihood, lg.marginal().log_prob(x), atol=1e-4, rtol=0)
    assert res.log_weight_var.max() < 1e-8


def test_ais_with_the_exact_guide_and_naive_mc_give_the_closed_form_marginal(linear_gaussian):
    """AIS from the exact top-down guide: every annealed density is q(z|x) p(x)^beta, so each
    chain's log weight is log p(x) *wherever* HMC moves z — a check that the hierarchical guide's
    log q is right at replayed values (1e-3 nats; 5 chains x 5 steps). Naive Monte Carlo from the
    prior (K = 50000; 5 latent, 4 observed dimensions): within 0.25 nats per point (observed
    errors <= 0.17 at K = 20000) and 0.1 on average."""
    marginal = pytest.importorskip("ppl_vae.marginal")
    lg, x = linear_gaussian
    x = x[:10]
    model = lg.model()
    exact = lg.marginal().log_prob(x).double()
    ais = marginal.annealed_importance_sampling(model, lg.exact_top_down(model), x,
                                                num_samples=5, num_steps=5)
    assert_close(ais.log_likelihood, exact, atol=1e-3, rtol=0)
    naive = marginal.naive_monte_carlo(model, x, num_samples=50000)
    err = (naive.log_likelihood.double() - exact).abs()
    assert err.max() < 0.25 and err.mean() < 0.1, err


def test_analytic_kl_is_unbiased_for_the_top_down_guide_and_biased_for_bottom_up(
        linear_gaussian):
    """meanfield (analytic KL) vs trace, 20000 vectorized particles, 8 points:

    * exact top-down guide: the ELBO is log p(x) (trace returns it exactly); meanfield within
      0.15 nats of it on the 8-point sum (its standard deviation, over 30 seeds: 0.033), and
      Pyro raises no mean-field warning;
    * perturbed top-down guide (means +0.3, raw scales +0.5): both estimate the same ELBO,
      within 0.4 nats (standard deviation of their difference over 30 seeds: 0.098; mean -0.008);
    * exact bottom-up guide: meanfield is off by more than 0.5 nats (observed 1.55), because
      z1's model parent z2 is sampled from z1 in that guide — why the builder refuses
      ``meanfield`` with the bottom-up guide and L > 1.
    """
    lg, x = linear_gaussian
    x = x[:8]
    exact = -float(lg.marginal().log_prob(x).sum())
    kw = dict(num_particles=20000, vectorize_particles=True, max_plate_nesting=1)
    model = lg.model()
    top_down = lg.exact_top_down(model)
    assert Trace_ELBO(**kw).loss(model, top_down, x) == pytest.approx(exact, abs=1e-3)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*mean field restriction.*")
        assert TraceMeanField_ELBO(**kw).loss(model, top_down, x) == pytest.approx(exact,
                                                                                    abs=0.15)
    with torch.no_grad():
        for head in top_down.heads:
            head.net.bias[: head.dim] += 0.3
            head.net.bias[head.dim:] += 0.5
    trace = Trace_ELBO(**kw).loss(model, top_down, x)
    assert trace > exact + 0.5  # the perturbation matters
    assert TraceMeanField_ELBO(**kw).loss(model, top_down, x) == pytest.approx(trace, abs=0.4)

    with pytest.warns(UserWarning, match="mean field restriction"):
        biased = TraceMeanField_ELBO(**kw).loss(model, lg.exact_bottom_up(), x)
    assert abs(biased - exact) > 0.5
    cfg = TrainConfig(latent_dims=(3, 2), hidden=(8,), objective="meanfield")
    with pytest.raises(ConfigError, match="bottom-up guide with 2 stochastic layers"):
        build_model_and_guide(cfg, lg.dx)
    build_model_and_guide(TrainConfig(latent_dims=(3, 2), hidden=(8,), objective="meanfield",
                                      guide="top-down"), lg.dx)


def test_precision_weighting_is_the_normalized_product_of_two_gaussians():
    """The top-down guide's q(z_l | z_{l+1}, x) is N(mu^, s^^2) N(mu_p, s_p^2), normalized:
    log N(z; loc, scale) - log N(z; a) - log N(z; b) must not depend on z."""
    torch.manual_seed(0)
    loc_a, scale_a = torch.randn(5, 3).double(), torch.rand(5, 3).double() + 0.1
    loc_b, scale_b = torch.randn(5, 3).double(), torch.rand(5, 3).double() + 0.1
    loc, scale = precision_weighted(loc_a, scale_a, loc_b, scale_b)
    z = torch.linspace(-3, 3, 7).double().reshape(7, 1, 1)
    lhs = dist.Normal(loc, scale).log_prob(z)
    rhs = dist.Normal(loc_a, scale_a).log_prob(z) + dist.Normal(loc_b, scale_b).log_prob(z)
    diff = lhs - rhs
    assert_close(diff, diff[:1].expand_as(diff), atol=1e-9)

# ------------------------------------------------------------------------------------------
# works with every objective, sampling, checkpoints
# ------------------------------------------------------------------------------------------
CASES = [(obj, guide, dims) for dims in [(6, 3), (6, 4, 2)] for guide in ["bottom-up", "top-down"]
         for obj in ["trace", "meanfield", "tracegraph", "iwae"]
         if not (obj == "meanfield" and guide == "bottom-up")]


@pytest.mark.parametrize(
    "objective,guide_kind,dims", CASES,
    ids=[f"{o}-{g}-L{len(d)}" for o, g, d in CASES])
def test_every_objective_gives_finite_gradients_for_all_parameters(objective, guide_kind, dims):
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(16, 20))
    model, guide = build_model_and_guide(
        TrainConfig(latent_dims=dims, hidden=(16,), guide=guide_kind, objective=objective), 20)
    obj = make_objective(objective, num_particles=3)
    loss = obj.loss_and_grads(model, guide, x, num_data=100)
    assert math.isfinite(loss)
    for owner, module in (("model", model), ("guide", guide)):
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{owner}.{name}"
        assert any(p.grad.abs().sum() > 0 for p in module.parameters()), owner
    if guide_kind == "top-down":
        # the shared generative path: the guide uses but does not own the model's conditionals
        assert not set(map(id, guide.parameters())) & set(map(id, model.parameters()))
        assert guide.model is model


ALL_OBJECTIVES = available_objectives()


@pytest.mark.parametrize("guide_kind", ["bottom-up", "top-down"])
@pytest.mark.parametrize("objective", ALL_OBJECTIVES)
def test_every_registered_objective_runs_on_a_two_layer_model(objective, guide_kind):
    """Every objective in the registry (training objectives and gradient estimators) takes a
    step on a 2-layer model with either guide: finite loss, finite gradients, and a non-zero
    gradient for the guide. The analytic-KL objectives are refused for the bottom-up guide."""
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(16, 20))
    cfg = TrainConfig(latent_dims=(6, 3), hidden=(16,), guide=guide_kind, objective=objective)
    obj = make_objective(objective, num_particles=3, x_dim=20)
    if guide_kind == "bottom-up" and isinstance(obj.elbo, TraceMeanField_ELBO):
        with pytest.raises(ConfigError, match="analytic KL"):
            build_model_and_guide(cfg, 20)
        return
    model, guide = build_model_and_guide(cfg, 20)
    loss = obj.loss_and_grads(model, guide, x, num_data=100)
    assert math.isfinite(loss)
    grads = [p.grad for m in (model, guide) for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in guide.parameters())


def _mean_guide_gradient(objective, model, guide, x, k, seeds, repeats=5000):
    """E[gradient w.r.t. the guide's parameters], averaged over ``repeats`` copies of each point
    (independent particles) and over ``seeds``."""
    xr = x.repeat(repeats, 1)
    out = []
    for seed in seeds:
        pyro.set_rng_seed(seed)
        guide.zero_grad(set_to_none=True)
        make_objective(objective, num_particles=k).loss_and_grads(model, guide, xr)
        out.append(torch.cat([p.grad.flatten() for p in guide.parameters()]) / repeats)
    return torch.stack(out).mean(0)


@pytest.mark.parametrize("reference,estimator,k,guide_kind,tol", [
    ("trace", "stl", 1, "bottom-up", 0.01),
    ("trace", "stl", 1, "top-down", 0.01),
    ("iwae", "dreg", 5, "bottom-up", 0.01),
    ("iwae", "dreg", 5, "top-down", 0.04),
], ids=["stl-bottom-up", "stl-top-down", "dreg-bottom-up", "dreg-top-down"])
def test_path_derivative_estimators_are_unbiased_on_hierarchical_guides(
        linear_gaussian, reference, estimator, k, guide_kind, tol):
    """STL (Roeder et al. 2017) and DReG (Tucker et al. 2018) must have the expected guide
    gradient of the estimator they replace (trace / iwae-K): they only drop or rewrite terms of
    zero mean. Guide: the exact linear-Gaussian guide perturbed (means +0.3, raw scales +0.5,
    mean weights x0.7), trainable. Both estimators see the same random numbers (2 seeds x 5000
    particle sets per point), so the difference is mostly their own extra noise; tolerance 1%
    of the largest gradient component, 4% for DReG with the top-down guide, where the IWAE
    reference itself varies by 2.7% from seed to seed (observed now: STL <= 0.6%, DReG
    bottom-up < 1%, top-down 1.5%; a DReG that detached the parent latents too was off by
    2% bottom-up and 15% top-down, which these tolerances catch)."""
    lg, x = linear_gaussian
    x = x[:4]
    model = lg.model()
    guide = lg.guide(guide_kind, model)
    with torch.no_grad():
        for cond in (guide.layers if guide_kind == "bottom-up" else guide.heads):
            cond.net.bias[: cond.dim] += 0.3
            cond.net.bias[cond.dim:] += 0.5
            cond.net.weight[: cond.dim] *= 0.7
    guide.requires_grad_(True)
    ref = _mean_guide_gradient(reference, model, guide, x, k, seeds=(0, 1))
    est = _mean_guide_gradient(estimator, model, guide, x, k, seeds=(0, 1))
    rel = float((ref - est).abs().max() / ref.abs().max())
    assert rel < tol, f"max |E grad {estimator} - E grad {reference}| = {rel:.4f} x max |grad|"


def test_sampling_and_reconstruction_on_a_three_layer_model():
    torch.manual_seed(0)
    model, guide = build_model_and_guide(
        TrainConfig(latent_dims=(6, 4, 2), hidden=(16,), guide="top-down"), 20)
    tr = poutine.trace(model).get_trace(None, batch_size=5)
    assert [n for n in tr.nodes if n.startswith(("z", "x"))] == ["z3", "z2", "z1", "x"]
    assert tr.nodes["z3"]["value"].shape == (5, 2) and tr.nodes["x"]["value"].shape == (5, 20)
    x = torch.bernoulli(torch.rand(4, 20))
    assert sample_images(model, 5).shape == (5, 20)
    assert reconstruct(model, guide, x).shape == (4, 20)
    assert interpolate(model, guide, x[:2], x[2:], steps=3).shape == (2, 3, 20)


def test_composition_errors_name_the_mismatch():
    with pytest.raises(ConfigError, match=r"p\(z1 \| z2\) takes 5 inputs but z2 has 4"):
        HierarchicalVAE(decoder=MLP([6, 8, 20]), conditionals=[GaussianConditional.mlp(5, 6)],
                        top_dim=4)
    with pytest.raises(ConfigError, match="the decoder takes 7 inputs but z1 has 6"):
        HierarchicalVAE(decoder=MLP([7, 20]), conditionals=[GaussianConditional.mlp(4, 6)])
    with pytest.raises(ConfigError, match="outputs 5 numbers"):
        GaussianConditional(nn.Linear(3, 5), dim=2)
    with pytest.raises(ConfigError, match=r"q\(z2 \| z1\) takes 5 inputs but z1 has 6"):
        BottomUpGuide([GaussianConditional.mlp(20, 6), GaussianConditional.mlp(5, 2)])
    with pytest.raises(ConfigError, match="unknown guide 'sideways'"):
        build_model_and_guide(TrainConfig(latent_dims=(4, 2), guide="sideways"), 20)


# ------------------------------------------------------------------------------------------
# KL warm-up, training, CLI
# ------------------------------------------------------------------------------------------
def test_kl_warmup_at_beta_zero_leaves_only_the_reconstruction_term():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(8, 20))
    model, guide = build_model_and_guide(TrainConfig(latent_dims=(6, 3), hidden=(16,)), 20)
    anneal = ScaleLatents(0.0)
    pyro.set_rng_seed(3)
    loss = Trace_ELBO(max_plate_nesting=1).loss(anneal(model), anneal(guide), x)
    gtr = _guide_trace(guide, x, seed=3)
    mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(x)
    mtr.compute_log_prob()
    assert loss == pytest.approx(-mtr.nodes["x"]["log_prob_sum"].item(), rel=1e-5)


def test_two_layer_training_with_kl_warmup_and_cli(tmp_path, tiny_digits, capsys):
    from ppl_vae.commands.cli import main
    from ppl_vae.training.loop import train
    from ppl_vae.training.runs import load_run

    res = train(dataset=tiny_digits, latent_dims=(8, 4), hidden=(32,), epochs=2,
                kl_warmup_epochs=2, batch_size=20, progress=False, guide="top-down")
    assert res.metrics.valid_elbo.notna().all() and torch.isfinite(
        torch.tensor(res.metrics.valid_elbo.values)).all()

    out = tmp_path / "run"
    rc = main(["train", "--data", "digits", "--latent-dims", "8,4", "--hidden", "32",
               "--epochs", "1", "--kl-warmup", "1", "--batch-size", "64", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "active units (A_u > 0.01): z1 " in printed and "/8, z2 " in printed
    csv = (out / "active_units.csv").read_text().splitlines()
    assert csv[0] == "split,site,dim,active,threshold,num_samples,run_id,checkpoint_id"
    assert [line.split(",")[1] for line in csv[1:]] == ["z1", "z2"]
    last = load_run(out, checkpoint="last")  # the report describes the last checkpoint
    assert csv[1].split(",")[-2:] == [last.run_id, last.checkpoint_id]
    run = load_run(out)
    assert isinstance(run.model, HierarchicalVAE) and run.model.latent_dims == (8, 4)
    assert main(["sample", "--run", str(out), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    # evaluate and grad-variance take the 2-layer run unchanged
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--estimator", "is", "-k", "20", "--limit", "10",
                 "--json", "--no-progress"]) == 0
    assert '"log_likelihood' in capsys.readouterr().out
    assert main(["grad-variance", "--run", str(out), "--objectives", "reparam,stl,iwae-3",
                 "--draws", "3", "--batch-size", "8"]) == 0


def test_top_down_checkpoint_reloads_with_the_guide_sharing_the_model(tmp_path, tiny_digits):
    from ppl_vae.training.loop import train
    from ppl_vae.training.runs import load_run

    res = train(out=tmp_path, dataset=tiny_digits, latent_dims=(6, 3), hidden=(16,), epochs=1,
                batch_size=50, progress=False, guide="top-down")
    run = load_run(tmp_path, dataset=tiny_digits)
    assert run.guide.model is run.model
    x = tiny_digits.valid[:5].round()
    t1 = _guide_trace(res.guide, x, seed=2)
    t2 = _guide_trace(run.guide, x, seed=2)
    assert_close(t1.log_prob_sum(), t2.log_prob_sum(), atol=1e-4)


# ------------------------------------------------------------------------------------------
# active units
# ------------------------------------------------------------------------------------------
def _fixed_linear(in_dim, weight_rows, log_scale_bias):
    """nn.Linear whose mean half is ``weight_rows`` (no bias) and raw-scale half is constant."""
    out = len(weight_rows)
    lin = nn.Linear(in_dim, 2 * out)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[:out] = torch.tensor(weight_rows, dtype=torch.float32)
        lin.bias[out:] = log_scale_bias
    return lin


def test_active_units_on_a_constructed_two_layer_guide():
    """q(z1|x) = N(M x, 0.69^2), q(z2|z1) = N(B z1, 0.69^2) with x ~ N(0, I_3) (2000 points).

    E[z1|x] = M x and E[z2|x] = B M x exactly, so A_u = Var_x of those = squared row norms:
    z1: rows (1,0,0), (0,2,0), (0,0,0.05), (0,0,0)       -> A = 1, 4, 0.0025, 0  -> 2 active
    z2: rows (1,0,0,0), (0,0,1,0), (0,0.04,0,0) of z1    -> A = 1, 0.0025, 0.0064 -> 1 active
    The z2 means are Monte Carlo averages over S = 50 samples of z1 (noise 0.48/50 per unit,
    removed by the estimator); tolerance 15% of A (+0.002).
    """
    torch.manual_seed(0)
    m = [[1, 0, 0], [0, 2, 0], [0, 0, 0.05], [0, 0, 0]]
    b = [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0.04, 0, 0]]
    guide = BottomUpGuide([GaussianConditional(_fixed_linear(3, m, 0.0), 4),
                           GaussianConditional(_fixed_linear(4, b, 0.0), 3)])
    x = torch.randn(2000, 3)
    res = active_units(guide, x, num_samples=50, batch_size=700)
    var_x = x.var(0)
    expected = {"z1": torch.stack([var_x[0], 4 * var_x[1], 0.0025 * var_x[2], var_x[0] * 0]),
                "z2": torch.stack([var_x[0], 0.0025 * var_x[2], 0.0064 * var_x[1]])}
    assert list(res.activity) == ["z1", "z2"]
    assert_close(res.activity["z1"], expected["z1"], atol=1e-5, rtol=1e-4,
                 msg="z1 has no latent parents: exact")
    assert_close(res.activity["z2"], expected["z2"], atol=2e-3, rtol=0.15)
    assert res.counts == {"z1": 2, "z2": 1} and res.dims == {"z1": 4, "z2": 3}
    assert res.summary() == "active units (A_u > 0.01): z1 2/4, z2 1/3"


def test_active_units_of_a_collapsed_guide_and_of_the_exact_linear_gaussian_guides(
        linear_gaussian):
    """A guide ignoring x has no active units. For the linear-Gaussian model both exact guides
    have E_q[z | x] = E[z | x] = Cov(z, x) Cov(x)^-1 (x - E x), so on x ~ p(x) the activity is
    A = diag(Cov(z, x) Cov(x)^-1 Cov(x, z)) — the same for both guides, although each computes
    one layer by Monte Carlo (S = 50): z2 for bottom-up, z1 for top-down. 3000 points;
    tolerance 10% (the sampling error of a variance over 3000 points is ~3%)."""
    torch.manual_seed(0)
    q = DiagonalNormalGuide(5, 3, (8,))
    with torch.no_grad():
        q.encoder[0].weight.zero_()
    res = active_units(q, torch.randn(300, 5), num_samples=1)
    assert res.counts == {"z": 0} and res.summary() == "active units (A_u > 0.01): z 0/3"

    lg, _ = linear_gaussian
    px = lg.marginal()
    x = lg.sample_x(3000, seed=2)
    cov_x_inv = torch.linalg.inv(px.covariance_matrix)
    cross = {"z1": lg.cov_z1 @ lg.W.T, "z2": lg.A.T @ lg.W.T}      # Cov(z_l, x)
    expected = {k: (c @ cov_x_inv @ c.T).diagonal() for k, c in cross.items()}
    model = lg.model()
    for kind in ("bottom-up", "top-down"):
        res = active_units(lg.guide(kind, model), x, num_samples=50)
        for site in ("z1", "z2"):
            assert_close(res.activity[site], expected[site], atol=1e-3, rtol=0.1,
                         msg=f"{kind} {site}")
        assert res.counts == {"z1": 3, "z2": 2}, (kind, res.activity)
