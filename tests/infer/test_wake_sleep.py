"""Wake-sleep (``ws``, :class:`ppl_vae.infer.WakeSleep`): both phases' gradients against the
closed form of a linear-Gaussian pair, and training a VAE with it."""

from __future__ import annotations

import math

import pytest
import torch
from pairs import A_TRUE, B_TRUE, S_TRUE, lg_guide, lg_model

from ppl_vae import TrainConfig, train

CFG = dict(data="digits", latent_dims=(3,), hidden=(16,), batch_size=50, lr=3e-3)


def test_wake_sleep_gradients_match_the_closed_form():
    """Sleep-phi: -E_p[grad_phi log q(z|x)] over dreams (z, x) ~ p, in closed form for the
    linear-Gaussian pair; wake-theta: -E_q[grad_theta log p(x, z)] at fixed x."""
    import pyro

    from ppl_vae.infer.objectives import make_objective

    n = 40000
    x = A_TRUE * torch.randn(n) + B_TRUE + S_TRUE * torch.randn(n)
    obj = make_objective("ws")
    assert obj.can_infer_discrete
    obj.loss_and_grads(lg_model, lg_guide, x)
    grad = {k: pyro.param(k).unconstrained().grad / n for k in ("a", "b", "c", "d", "log_e")}
    a, b, s, c, d, e = A_TRUE, B_TRUE, S_TRUE, 0.3, -0.2, math.exp(-0.5)
    # sleep-phi, expectations under the model's joint: E z = 0, E x = b, E zx = a,
    # E x^2 = a^2 + s^2 + b^2, E (z - c x - d)^2 = (1 - c a)^2 + c^2 s^2 + (c b + d)^2
    sleep = {"d": -(0 - c * b - d) / e**2,
             "c": -(a - c * (a * a + s * s + b * b) - d * b) / e**2,
             "log_e": -(-1 + ((1 - c * a) ** 2 + c * c * s * s + (c * b + d) ** 2) / e**2)}
    for k, v in sleep.items():
        assert grad[k].item() == pytest.approx(v, abs=0.05 * max(1.0, abs(v))), k
    # wake-theta, z ~ q(z|x): E[(x - a z - b)/s^2] and E[(x - a z - b) z / s^2]
    m = c * x + d
    wake_b = -((x - a * m - b) / s**2).mean()
    wake_a = -(((x - b) * m - a * (m * m + e * e)) / s**2).mean()
    assert grad["b"].item() == pytest.approx(wake_b.item(), abs=0.05 * max(1, abs(wake_b)))
    assert grad["a"].item() == pytest.approx(wake_a.item(), abs=0.05 * max(1, abs(wake_a)))
    # and the reported loss is the -ELBO, whose exact value is available here
    elbo_loss = obj.loss(lg_model, lg_guide, x) / n
    assert math.isfinite(elbo_loss)


def test_wake_sleep_trains_a_vae(tiny_digits):
    res = train(TrainConfig(**{**CFG, "lr": 1e-2}, objective="ws", epochs=4),
                dataset=tiny_digits, progress=False, reports=False)
    assert res.metrics.valid_elbo.iloc[-1] > res.metrics.valid_elbo.iloc[0] + 1.0
