"""Monte Carlo EM (:class:`ppl_vae.infer.mcem.MonteCarloEM`): towards the maximum-likelihood
parameters of a linear-Gaussian model, and on a VAE without touching Pyro's param store."""

from __future__ import annotations

import torch
from pairs import A_TRUE, B_TRUE, S_TRUE, lg_model

from ppl_vae import TrainConfig

CFG = dict(data="digits", latent_dims=(3,), hidden=(16,), batch_size=50, lr=3e-3)


def test_mcem_moves_theta_towards_the_maximum_likelihood_value():
    """x ~ N(b, a^2 + s^2) marginally, s fixed: the MLE is b = mean(x), a^2 = var(x) - s^2."""
    import pyro

    from ppl_vae.infer.mcem import MonteCarloEM

    torch.manual_seed(0)
    n = 100
    x = A_TRUE * torch.randn(n) + B_TRUE + S_TRUE * torch.randn(n)
    b_mle, a2_mle = x.mean().item(), x.var(unbiased=False).item() - S_TRUE**2
    pyro.clear_param_store()
    pyro.param("a", torch.tensor(0.5))
    pyro.param("b", torch.tensor(-1.0))
    em = MonteCarloEM(lg_model, num_data=n, lr=0.1, m_steps=5, num_leapfrog=10, warmup=3)

    def gap():
        a, b = pyro.param("a").item(), pyro.param("b").item()
        return abs(b - b_mle), abs(a * a - a2_mle)

    before = gap()
    for _ in range(20):
        em.step(x, torch.arange(n))
    after = gap()
    assert after[0] < 0.5 * before[0] and after[1] < 0.5 * before[1], (before, after)
    assert em.seen.all() and em.state["z"].shape == (n,)


def test_mcem_on_a_vae_trains_the_module_and_leaves_the_param_store_alone(tiny_digits):
    """HMC's tracing registers a PyroModule's weights in Pyro's global store; MonteCarloEM
    removes them, so a later model with the same names trains its own weights."""
    import pyro

    from ppl_vae.infer.mcem import MonteCarloEM
    from ppl_vae.training.builders import build_model_and_guide

    model, _ = build_model_and_guide(TrainConfig(**CFG), tiny_digits.x_dim)
    before = model.decoder[0].weight.detach().clone()
    em = MonteCarloEM(model, num_data=200, warmup=2)
    x = torch.bernoulli(tiny_digits.train[:50])
    em.step(x, torch.arange(50))
    assert len(pyro.get_param_store()) == 0
    assert not torch.equal(model.decoder[0].weight, before)
    assert em.state["z"].shape == (200, 3) and em.seen.sum() == 50
