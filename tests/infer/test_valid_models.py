"""Model/guide pairs written as Pyro users write them, not as ours are.

1. Pixels in an inner ``pyro.plate("pixels", D, dim=-1)`` inside ``pyro.plate("data", dim=-2)``
   (no ``.to_event`` on the likelihood). It is the same probabilistic model as the usual
   ``.to_event(1)`` one with the data plate at -1, and it draws the same random numbers in the
   same order, so under one seed every objective must give the *same* loss and gradients on both
   — which fails if any objective assumes one plate (``max_plate_nesting=1``) or sums the wrong
   dimensions.
2. Function-style models with ``pyro.module`` re-created in one process under the same names
   (a notebook re-running its cell) without clearing Pyro's param store.
"""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppl_vae
from ppl_vae.analysis.gradient_variance import gradient_statistics
from ppl_vae.infer.objectives import available_objectives, make_objective, objective_spec
from ppl_vae.marginal import importance_sampling
from ppl_vae.training.loop import estimate_elbo

N, D, J = 6, 5, 2
X = torch.bernoulli(torch.full((N, D), 0.4), generator=torch.Generator().manual_seed(0))


class Nets(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.dec = nn.Linear(J, D)
        self.enc = nn.Linear(D, 2 * J)


def _data_plate(x, num_data, dim):
    if num_data is None:
        return pyro.plate("data", x.shape[0], dim=dim)
    return pyro.plate("data", num_data, subsample=torch.arange(x.shape[0]), dim=dim)


def event_pair(nets):
    """The usual form: data plate at -1, ``.to_event(1)`` on latent and likelihood."""

    def model(x, num_data=None):
        pyro.module("nets", nets)
        with _data_plate(x, num_data, -1):
            z = pyro.sample("z", dist.Normal(torch.zeros(J), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=nets.dec(z)).to_event(1), obs=x)

    def guide(x, num_data=None):
        pyro.module("nets", nets)
        loc, raw = nets.enc(x).chunk(2, -1)
        with _data_plate(x, num_data, -1):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))

    return model, guide


def plate_pair(nets):
    """Pixels in an inner plate at -1, the data plate at -2, no ``.to_event`` on x."""

    def model(x, num_data=None):
        pyro.module("nets", nets)
        with _data_plate(x, num_data, -2):
            z = pyro.sample("z", dist.Normal(torch.zeros(1, J), 1.0).to_event(1))
            with pyro.plate("pixels", D, dim=-1):
                pyro.sample("x", dist.Bernoulli(logits=nets.dec(z).squeeze(-2)), obs=x)

    def guide(x, num_data=None):
        pyro.module("nets", nets)
        loc, raw = nets.enc(x).unsqueeze(-2).chunk(2, -1)
        with _data_plate(x, num_data, -2):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))

    return model, guide


def _loss_and_grads(name, pair, num_data):
    nets = Nets()
    model, guide = pair(nets)
    objective = make_objective(name, x_dim=D)
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    torch.manual_seed(7)  # the lazily built neural baseline of score-nn
    kwargs = {} if num_data is None else {"num_data": num_data}
    loss = objective.loss_and_grads(model, guide, X, **kwargs)
    return loss, [p.grad.clone() for p in nets.parameters()]


@pytest.mark.parametrize("num_data", [None, 4 * N], ids=["full", "subsampled"])
@pytest.mark.parametrize("name", [n if not objective_spec(n).takes_k else f"{n}-3"
                                  for n in available_objectives()])
def test_every_objective_accepts_an_inner_pixel_plate(name, num_data):
    loss_event, grads_event = _loss_and_grads(name, event_pair, num_data)
    loss_plate, grads_plate = _loss_and_grads(name, plate_pair, num_data)
    assert loss_plate == pytest.approx(loss_event, rel=1e-5)
    for a, b in zip(grads_plate, grads_event):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_svi_statistics_and_estimators_accept_an_inner_pixel_plate():
    estimates = {}
    for pair in (event_pair, plate_pair):
        nets = Nets()
        model, guide = pair(nets)
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        svi = ppl_vae.SVI(model, guide, "iwae-4", lr=1e-2)
        losses = [svi.step(X, num_data=3 * N) for _ in range(5)]
        data_dim = -1 if pair is event_pair else -2
        pyro.set_rng_seed(2)
        is_ll = importance_sampling(model, guide, X, 50, data_dim=data_dim).log_likelihood
        stats = gradient_statistics(model, guide, X, ["trace", "score"], draws=5, seed=3)
        estimates[pair.__name__] = (losses, is_ll, estimate_elbo(model, guide, X, seed=4),
                                    stats["score"]["total_variance"])
    a, b = estimates["event_pair"], estimates["plate_pair"]
    assert a[0] == pytest.approx(b[0], rel=1e-5)
    torch.testing.assert_close(a[1], b[1])
    assert a[2] == pytest.approx(b[2], rel=1e-6)
    assert a[3] == pytest.approx(b[3], rel=1e-4)


def test_recreated_function_models_train_their_own_weights():
    """Re-creating a function-style pair under the same pyro.module names (the param store still
    holds the first pair's tensors) trains the new pair's weights, and leaves the old ones."""
    first = Nets()
    svi1 = ppl_vae.SVI(*event_pair(first), "trace", lr=0.05)
    svi1.step(X)
    second = Nets()
    model2, guide2 = event_pair(second)
    old = copy.deepcopy(first.state_dict())
    new = copy.deepcopy(second.state_dict())
    svi2 = ppl_vae.SVI(model2, guide2, "trace", lr=0.05)
    for _ in range(3):
        svi2.step(X)
    assert {id(p) for p in svi2.parameters()} == {id(p) for p in second.parameters()}
    for k, v in second.state_dict().items():
        assert not torch.equal(v, new[k]), k
    for k, v in first.state_dict().items():
        assert torch.equal(v, old[k]), k


def test_svi_says_what_is_wrong_when_nothing_has_a_gradient():
    def model(x, num_data=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(J), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    def guide(x, num_data=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(J), 1.0).to_event(1))

    with pytest.raises(ppl_vae.ConfigError, match="no gradient for any parameter"):
        ppl_vae.SVI(model, guide, "trace").step(torch.zeros(3, 1))
