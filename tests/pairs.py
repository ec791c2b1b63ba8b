"""Model/guide pairs shared by several test modules, with their closed forms."""

import pyro
import pyro.distributions as dist
import torch

from ppl_vae.poutine.plates import data_plate


class LinearGaussian:
    """z ~ N(0, I_J), x | z ~ N(W z + b, s^2 I_D): p(x) = N(b, W W^T + s^2 I), closed form."""

    def __init__(self, w, b, s):
        self.w, self.b, self.s = w, b, s

    def model(self, x=None, batch_size=None):
        n = x.shape[0] if x is not None else batch_size
        j = self.w.shape[1]
        with data_plate(n):
            z = pyro.sample("z", dist.Normal(torch.zeros(j, dtype=self.w.dtype), 1.0).to_event(1))
            return pyro.sample("x", dist.Normal(z @ self.w.T + self.b, self.s).to_event(1), obs=x)

    def posterior(self, x):
        j = self.w.shape[1]
        cov = torch.linalg.inv(torch.eye(j, dtype=x.dtype) + self.w.T @ self.w / self.s**2)
        mean = (x - self.b) @ self.w @ cov / self.s**2
        return mean, cov

    def exact_guide(self, x):
        mean, cov = self.posterior(x)
        with data_plate(x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov))

    def marginal(self):
        d = self.w.shape[0]
        return dist.MultivariateNormal(self.b, self.w @ self.w.T + self.s**2 * torch.eye(d))


def decoder_mean(model, z):
    """E[x | z] of a model with a ``decoder`` network and a ``likelihood`` (the VAE, the SBN and
    the hierarchical VAE at its bottom layer), computed directly from the two pieces."""
    dtype = next(model.decoder.parameters()).dtype
    return model.likelihood.mean(model.decoder(z.to(dtype)))


# a scalar linear-Gaussian pair with named pyro.param's (wake-sleep, Monte Carlo EM)
A_TRUE, B_TRUE, S_TRUE = 2.0, 1.0, 0.5


def lg_model(x=None, num_data=None, batch_size=None):
    """z ~ N(0, 1), x | z ~ N(a z + b, s^2), scalars; a, b learnable."""
    import pyro
    import pyro.distributions as dist

    a = pyro.param("a", torch.tensor(A_TRUE))
    b = pyro.param("b", torch.tensor(B_TRUE))
    n = x.shape[0] if x is not None else batch_size
    with pyro.plate("data", n, subsample_size=n if num_data is None else None):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        return pyro.sample("x", dist.Normal(a * z + b, S_TRUE), obs=x)


def lg_guide(x, num_data=None, batch_size=None):
    """q(z | x) = N(c x + d, e^2), e = exp(log_e)."""
    import pyro
    import pyro.distributions as dist

    c, d = pyro.param("c", torch.tensor(0.3)), pyro.param("d", torch.tensor(-0.2))
    log_e = pyro.param("log_e", torch.tensor(-0.5))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(c * x + d, log_e.exp()))
