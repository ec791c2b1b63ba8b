"""Effect handlers used by the training loop."""

from __future__ import annotations

from pyro.poutine.messenger import Messenger

__all__ = ["ScaleLatents"]


class ScaleLatents(Messenger):
    """Multiply the log density of every *latent* (non-observed) sample site by ``beta``.

    Applied to both model and guide, the Monte Carlo ELBO becomes the KL-annealed objective
    E_q[log p(x|z)] + beta * E_q[log p(z) - log q(z|x)] used for warm-up (Bowman et al. 2016;
    Sønderby et al. 2016). ``beta`` is a plain attribute, so one handler instance can be updated
    step by step. Unlike ``poutine.scale`` it accepts beta = 0.
    """

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(beta)

    def _pyro_sample(self, msg):
        if not msg["is_observed"] and self.beta != 1.0:
            msg["scale"] = msg["scale"] * self.beta
