"""Shapes and log-densities of the VAE model and the diagonal-Gaussian guide, by hand."""

import math

import pyro
import pytest
import torch
from conftest import assert_close
from pyro import poutine

from ppl_vae.errors import ConfigError
from ppl_vae.guides import DiagonalNormalGuide
from ppl_vae.models import BernoulliLikelihood, GaussianLikelihood, VAEModel, make_likelihood

N, D, J = 5, 12, 3


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_model_sites_shapes_and_log_prob(likelihood):
    model = VAEModel(D, J, hidden=(7,), likelihood=likelihood)
    x = torch.bernoulli(torch.full((N, D), 0.3))
    tr = poutine.trace(model).get_trace(x)
    tr.compute_log_prob()
    z, xs = tr.nodes["z"], tr.nodes["x"]
    assert z["value"].shape == (N, J) and not z["is_observed"]
    assert xs["is_observed"] and torch.equal(xs["value"], x)
    assert z["log_prob"].shape == (N,) and xs["log_prob"].shape == (N,)
    # log N(z; 0, I) by hand
    expected_lpz = (-0.5 * z["value"] ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert_close(z["log_prob"], expected_lpz, atol=1e-5)
    out = model.decoder(z["value"])
    if likelihood == "bernoulli":
        p = torch.sigmoid(out)
        expected = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    else:
        loc, raw = out.chunk(2, -1)
        scale = torch.nn.functional.softplus(raw) + 1e-2
        expected = (-0.5 * ((x - loc) / scale) ** 2 - scale.log()
                    - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert_close(xs["log_prob"], expected, atol=1e-4)


def test_model_samples_without_data():
    model = VAEModel(D, J, hidden=(7,))
    tr = poutine.trace(model).get_trace(None, batch_size=4)
    assert tr.nodes["x"]["value"].shape == (4, D)
    assert set(tr.nodes["x"]["value"].unique().tolist()) <= {0.0, 1.0}


def test_guide_log_prob_and_reparameterization():
    guide = DiagonalNormalGuide(D, J, hidden=(7,))
    x = torch.rand(N, D)
    tr = poutine.trace(guide).get_trace(x)
    tr.compute_log_prob()
    site = tr.nodes["z"]
    loc, scale = guide.encode(x)
    assert (scale > 0).all()
    z = site["value"]
    expected = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert_close(site["log_prob"], expected, atol=1e-5)
    assert site["fn"].has_rsample
    # pathwise: dz/d(encoder weights) exists because z = mu + sigma * eps
    z.sum().backward()
    assert guide.encoder[0].weight.grad is not None
    assert guide.encoder[0].weight.grad.abs().sum() > 0


def test_minibatch_plate_scales_log_density_to_full_data():
    model = VAEModel(D, J, hidden=(7,))
    x = torch.bernoulli(torch.full((N, D), 0.3))
    pyro.set_rng_seed(1)
    full = poutine.trace(model).get_trace(x).log_prob_sum()
    pyro.set_rng_seed(1)
    scaled = poutine.trace(model).get_trace(x, num_data=10 * N).log_prob_sum()
    assert_close(scaled, 10 * full, rtol=1e-5)


def test_two_models_do_not_share_weights_in_ppl_vae():
    """ppl_vae runs with module-local params: a second model keeps its own weights."""
    from ppl_vae import SVI

    x = torch.bernoulli(torch.full((N, D), 0.3))
    pairs = [(VAEModel(D, J, hidden=(7,)), DiagonalNormalGuide(D, J,
                                                               hidden=(7,))) for _ in range(2)]
    before = [m.decoder[0].weight.detach().clone() for m, _ in pairs]
    for m, g in pairs:
        svi = SVI(m, g, "trace", lr=0.1)
        svi.step(x)
        # it optimizes exactly this pair's tensors, not same-named ones from the param store
        assert {id(p) for p in svi.parameters()} == {id(p) for p in [*m.parameters(),
                                                                     *g.parameters()]}
    for (m, _), w0 in zip(pairs, before):  # each model moved away from its *own* initial weights
        assert 0 < (m.decoder[0].weight - w0).abs().max() < 1.0


def test_stock_pyro_svi_trains_our_model_and_guide():
    """Pyro users can keep writing pyro.infer.SVI + pyro.optim.Adam, as in Pyro's VAE example."""
    import ppl_vae  # noqa: F401  (importing ppl_vae must not break Pyro's SVI)

    pyro.clear_param_store()
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(1, D).expand(64, D))
    model, guide = VAEModel(D, J, hidden=(16,)), DiagonalNormalGuide(D, J, hidden=(16,))
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    losses = [svi.step(x) for _ in range(150)]
    assert len(pyro.get_param_store()) == len(list(model.parameters())) + len(
        list(guide.parameters()))
    assert sum(losses[-10:]) / 10 < 0.9 * sum(losses[:10]) / 10  # measured: 530 -> 421


def test_likelihood_registry_and_errors():
    assert isinstance(make_likelihood("bernoulli"), BernoulliLikelihood)
    g = make_likelihood({"name": "gaussian", "min_scale": 0.1})
    assert isinstance(g, GaussianLikelihood) and g.min_scale == 0.1
    with pytest.raises(ConfigError, match="unknown likelihood 'poisson'"):
        make_likelihood("poisson")
    with pytest.raises(ConfigError, match="min_scale"):
        GaussianLikelihood(min_scale=0)


class _StockBernoulli(BernoulliLikelihood):
    """The textbook likelihood: torch's Bernoulli log_prob (-BCE with logits)."""

    def __call__(self, out):
        return pyro.distributions.Bernoulli(logits=out).to_event(1)


def _every_objective():
    from ppl_vae.infer.objectives import available_objectives, objective_spec

    return [f"{n}-3" if objective_spec(n).takes_k else n for n in available_objectives()]


@pytest.mark.parametrize("name", _every_objective())
def test_fast_bernoulli_gives_the_same_loss_and_gradients_for_every_objective(name):
    """LogitBernoulli's two-pass log-density is the stock one on {0, 1}: the same loss and
    gradients to 1e-5 in float64, for every registered objective (the fast/generic check for the
    one piece of the shipped model that was rewritten for speed)."""
    from ppl_vae.infer.objectives import make_objective

    x = torch.bernoulli(torch.full((N, D), 0.3), generator=torch.Generator().manual_seed(1))
    results = []
    for likelihood in (BernoulliLikelihood(), _StockBernoulli()):
        torch.manual_seed(0)
        model, guide = VAEModel(D, J, hidden=(7,)).double(), DiagonalNormalGuide(D, J, (7,))
        guide.double()
        model.likelihood = likelihood
        objective = make_objective(name, x_dim=D)
        for module in objective.modules.values():  # the neural baseline of score-nn
            module.double()
        pyro.set_rng_seed(3)
        loss = objective.loss_and_grads(model, guide, x.double(), num_data=4 * N)
        results.append((loss, [p.grad.clone() for p in [*model.parameters(),
                                                        *guide.parameters()]]))
    (fast_loss, fast_grads), (stock_loss, stock_grads) = results
    assert fast_loss == pytest.approx(stock_loss, rel=1e-5, abs=1e-8)
    for a, b in zip(fast_grads, stock_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
