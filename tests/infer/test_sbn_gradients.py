"""The sigmoid belief network: shapes, score-function gradients against the exact gradient
(by enumerating all 2^J latent states), and training on digits."""

from __future__ import annotations

import itertools

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pairs import decoder_mean

import ppl_vae
from ppl_vae import SVI, TrainConfig, build_model_and_guide, make_objective
from ppl_vae.analysis.gradient_variance import gradient_statistics
from ppl_vae.guides import BernoulliGuide
from ppl_vae.models import SigmoidBeliefNetwork

X_DIM, J, N = 5, 3, 4
X = torch.tensor([[1.0, 0, 1, 1, 0], [0, 0, 1, 0, 1], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]])


def _pair(seed=0):
    torch.manual_seed(seed)
    model, guide = SigmoidBeliefNetwork(X_DIM, J), BernoulliGuide(X_DIM, J)
    with torch.no_grad():
        model.prior_logits.copy_(torch.tensor([0.5, -0.5, 0.2]))
    return model, guide


def exact_elbo(model, guide, x):
    """sum_n sum_z q(z|x_n) [log p(x_n, z) - log q(z|x_n)], enumerating z in {0,1}^J."""
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=J)))  # (2^J, J)
    q = dist.Bernoulli(logits=guide.encode(x).unsqueeze(1)).to_event(1)  # batch (N, 1)
    log_q = q.log_prob(states)  # (N, 2^J)
    log_prior = model.prior().log_prob(states)  # (2^J,)
    log_lik = dist.Bernoulli(logits=model.decoder(states)).to_event(1).log_prob(x.unsqueeze(1))
    return (log_q.exp() * (log_lik + log_prior - log_q)).sum()


def test_shapes_sampling_and_support():
    model, guide = _pair()
    tr = pyro.poutine.trace(guide).get_trace(X)
    z = tr.nodes["z"]["value"]
    assert z.shape == (N, J) and set(z.unique().tolist()) <= {0.0, 1.0}
    assert not tr.nodes["z"]["fn"].has_rsample
    mtr = pyro.poutine.trace(pyro.poutine.replay(model, trace=tr)).get_trace(X)
    mtr.compute_log_prob()
    assert mtr.nodes["x"]["log_prob"].shape == (N,)
    assert mtr.nodes["z"]["log_prob"].shape == (N,)
    x_new = model(batch_size=7)
    assert x_new.shape == (7, X_DIM) and set(x_new.unique().tolist()) <= {0.0, 1.0}
    means = decoder_mean(model, z)
    assert means.shape == (N, X_DIM) and bool(((means > 0) & (means < 1)).all())
    # the MC ELBO estimate agrees with the enumerated one
    pyro.set_rng_seed(0)
    mc = -make_objective("trace", num_particles=4000).loss(model, guide, X)
    assert mc == pytest.approx(float(exact_elbo(model, guide, X).detach()), abs=0.1)


@pytest.fixture(scope="module")
def sbn_stats():
    model, guide = _pair()
    return gradient_statistics(
        model, guide, X, ["meanfield", "iwae-3", "dreg-3", "score", "score-avg", "score-nn",
                          "trace", "stl", "rws"],
        draws=150, num_particles=50, seed=1, warmup=150, keep_vectors=True)


def test_objectives_that_cannot_infer_discrete_latents_do_not_apply(sbn_stats):
    for name in ("meanfield", "iwae-3", "dreg-3"):
        assert sbn_stats[name]["applicable"] is False
        assert sbn_stats[name]["total_variance"] is None
    assert sbn_stats["score"]["reference"] == "score-avg"
    assert sbn_stats["score"]["cosine_to_reference"] > 0.9
    assert sbn_stats["score-avg"]["cosine_to_reference"] is None  # the reference itself


@pytest.mark.parametrize("name", ["score", "score-avg", "score-nn", "trace", "stl"])
def test_score_function_gradient_matches_enumerated_gradient(sbn_stats, name):
    """Unbiased within 4 standard errors per coordinate (see tests/test_estimators.py)."""
    model, guide = _pair()
    elbo = exact_elbo(model, guide, X)
    exact = {
        "decoder": torch.cat([g.reshape(-1) for g in torch.autograd.grad(
            elbo, list(model.parameters()), retain_graph=True)]).numpy(),
        "encoder": torch.cat([g.reshape(-1) for g in torch.autograd.grad(
            elbo, list(guide.parameters()))]).numpy(),
    }
    stats = sbn_stats[name]
    for group in ("decoder", "encoder"):
        se = np.sqrt(stats["variance"][group] / stats["draws"])
        err = np.abs(stats["mean"][group] - exact[group])
        assert (err <= 4 * se + 1e-5).all(), f"{name} {group}: {err / np.maximum(se, 1e-12)}"


def test_baselines_lower_the_score_variance_on_discrete_latents(sbn_stats):
    for name in ("score-avg", "score-nn"):
        assert sbn_stats[name]["variance_encoder"] < 0.5 * sbn_stats["score"]["variance_encoder"]


def test_builder_registers_sbn_and_refuses_reparameterized_objectives():
    model, guide = build_model_and_guide(
        TrainConfig(model="sbn", latent_dims=(6,), hidden=(16,), objective="score-nn"), 64)
    assert isinstance(model, SigmoidBeliefNetwork) and isinstance(guide, BernoulliGuide)
    for objective in ("meanfield", "iwae-5", "dreg-5", "analytic-kl"):
        with pytest.raises(ppl_vae.ConfigError, match="discrete"):
            build_model_and_guide(TrainConfig(model="sbn", objective=objective), 64)
    with pytest.raises(ppl_vae.ConfigError):
        build_model_and_guide(TrainConfig(model="sbn", latent_dims=(4, 2)), 64)


@pytest.mark.parametrize("objective", ["score-nn", "rws"])
def test_sbn_trains_on_digits(digits, objective):
    x = digits.split_for("train", ppl_vae.models.BernoulliLikelihood())[:256]
    pyro.set_rng_seed(0)
    model, guide = SigmoidBeliefNetwork(64, 16), BernoulliGuide(64, 16)
    svi = SVI(model, guide, make_objective(objective, x_dim=64), lr=3e-2)

    def elbo():
        pyro.set_rng_seed(123)
        return -make_objective("trace", num_particles=10).loss(model, guide, x) / len(x)

    before = elbo()
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randperm(len(x), generator=gen)[:32]
        svi.step(x[idx], num_data=len(x))
    after = elbo()
    assert after > before + 5.0, (before, after)  # nats per digit
