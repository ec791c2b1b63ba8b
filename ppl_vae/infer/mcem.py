"""Monte Carlo EM for any Pyro model (no guide): HMC E-step, gradient M-step.

The baseline of Kingma & Welling (2014, "Auto-Encoding Variational Bayes", section 5 and
figure 3): maximize the marginal likelihood sum_i log p_theta(x_i) by alternating

* **E-step**: for the latents z_i of a minibatch, run HMC on the posterior
  p_theta(z | x) ∝ p_theta(z) p_theta(x | z) (``pyro.infer.MCMC`` with an ``HMC`` kernel,
  ``num_leapfrog`` leapfrog steps per transition, its step size adapted towards an acceptance
  rate of ``target_accept`` during ``warmup`` transitions), each chain started from the sample
  that data point had at its last visit (the prior's sample on the first);
* **M-step**: ``m_steps`` Adam steps on theta ascending the complete-data log-likelihood
  (1/B) sum_i log p_theta(x_i, z_i) at the sampled z_i, computed by running the model under
  ``poutine.condition(model, data=z)``.

With exact posterior samples this is stochastic EM: the expected M-step gradient is
E_{p(z|x)}[grad_theta log p_theta(x, z)] = grad_theta log p_theta(x) (Fisher's identity), so
theta climbs the marginal likelihood. Kingma & Welling used 10 leapfrog steps, a step size tuned
to 90% acceptance and 5 weight updates per E-step; their finding is that it does not scale to the
full data set (every data point needs its own chain), which ``benchmarks/kingma_welling.py``
measures.

Works on any model ``model(x, ...)`` whose latent sample sites carry the data points along
dimension 0 (every ppl_vae model; the E-step's HMC runs jointly over the minibatch, which is
exact since the points' posteriors are independent). The model is run *without* ``num_data``
in both steps, so a subsampled data plate does not temper the posterior.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.infer.mcmc import HMC, MCMC
from torch import nn

from ppl_vae.errors import ConfigError
from ppl_vae.poutine.trace import latent_values, trainable_tensors

__all__ = ["MonteCarloEM"]


def _latent_sites(model, x, kwargs) -> dict:
    with torch.no_grad(), poutine.block():
        return latent_values(poutine.trace(model).get_trace(x, **kwargs))


class MonteCarloEM:
    r"""Monte Carlo EM with an HMC E-step, the baseline of Kingma & Welling [1] (sec. 5).

    Maximizes the marginal likelihood :math:`\sum_i \log p_\theta(x_i)` of any model (no
    guide) by alternating, on a minibatch of :math:`B` points,

    .. math::

        \text{E-step:}\quad z_i \sim \mathrm{HMC}\big(p_\theta(z \mid x_i)
            \propto p_\theta(z)\, p_\theta(x_i \mid z)\big), \qquad
        \text{M-step:}\quad \theta \leftarrow \mathrm{Adam}\Big(\nabla_\theta
            \frac{1}{B} \sum_{i=1}^{B} \log p_\theta(x_i, z_i)\Big)
            \ (\texttt{m\_steps} \text{ times}).

    With exact posterior samples the expected M-step gradient is
    :math:`\mathbb{E}_{p_\theta(z \mid x)}[\nabla_\theta \log p_\theta(x, z)] = \nabla_\theta
    \log p_\theta(x)` (Fisher's identity), so this is stochastic EM [3]. The E-step runs one
    :class:`pyro.infer.mcmc.HMC` chain jointly over the minibatch [2] (``num_leapfrog`` leapfrog
    steps, the step size adapted towards acceptance ``target_accept`` during ``warmup``
    transitions and carried to the next E-step), each point's chain started from the sample it
    had at its last visit (the prior's on the first). The model is run without ``num_data``.

    :param model: a Pyro model ``model(x, **model_kwargs)`` whose latent sites carry the data
        points along dimension 0 (every ppl_vae model); its parameters are those of the
        ``nn.Module`` it is, or its ``pyro.param`` sites.
    :param int num_data: :math:`N`, the size of the data set (each point's last sample is kept).
    :param float lr: the M-step's Adam learning rate. Default 1e-3.
    :param int m_steps: Adam updates per M-step. Default 5.
    :param int num_leapfrog: leapfrog steps per HMC transition. Default 10.
    :param float step_size: the initial HMC step size. Default 0.05.
    :param int warmup: HMC transitions per E-step spent adapting the step size (0: no
        adaptation). Default 10.
    :param float target_accept: the acceptance rate the step size is adapted towards.
        Default 0.9.
    :param model_kwargs: keyword arguments passed to every call of ``model``.

    :meth:`step` ``(x, index)`` runs one E-step and one M-step and returns the complete-data
    log-likelihood per point computed for the M-step's last update; ``index`` holds the
    positions of the minibatch ``x`` in the data set.

    Example::

        import torch
        from ppl_vae.infer.mcem import MonteCarloEM
        from ppl_vae.models import VAEModel

        data = torch.rand(100, 20).bernoulli()
        em = MonteCarloEM(VAEModel(20, 2, hidden=(16,)), num_data=100, warmup=2, num_leapfrog=3)
        index = torch.arange(8)
        log_lik = em.step(data[index], index)  # (1/B) sum_i log p(x_i, z_i), last M-step update

    **References**

    [1] D. P. Kingma, M. Welling, *Auto-Encoding Variational Bayes*, ICLR 2014.

    [2] R. M. Neal, *MCMC Using Hamiltonian Dynamics*, Handbook of Markov Chain Monte Carlo,
    2011.

    [3] G. C. G. Wei, M. A. Tanner, *A Monte Carlo Implementation of the EM Algorithm and the
    Poor Man's Data Augmentation Algorithms*, JASA 85, 1990.
    """

    def __init__(self, model, num_data: int, lr: float = 1e-3, m_steps: int = 5,
                 num_leapfrog: int = 10, step_size: float = 0.05, warmup: int = 10,
                 target_accept: float = 0.9, **model_kwargs):
        if num_data < 1 or m_steps < 1 or num_leapfrog < 1 or warmup < 0 or not lr > 0:
            raise ConfigError("MonteCarloEM: num_data, m_steps, num_leapfrog >= 1, warmup >= 0 "
                              "and lr > 0 are required")
        self.model, self.num_data, self.lr, self.m_steps = model, int(num_data), lr, m_steps
        self.num_leapfrog, self.step_size = int(num_leapfrog), float(step_size)
        self.warmup, self.target_accept = int(warmup), float(target_accept)
        self.model_kwargs = model_kwargs
        self.state: dict[str, torch.Tensor] = {}  # site -> (num_data, ...) last samples
        self.seen = torch.zeros(self.num_data, dtype=torch.bool)
        self.optimizer: torch.optim.Optimizer | None = None
        self.acceptance = float("nan")

    def _initial(self, x, index) -> dict:
        fresh = _latent_sites(self.model, x, self.model_kwargs)
        init = {}
        for name, value in fresh.items():
            if name not in self.state:
                self.state[name] = torch.zeros((self.num_data, *value.shape[1:]),
                                               dtype=value.dtype, device=value.device)
            old = self.state[name][index]
            seen = self.seen[index].view(-1, *([1] * (value.dim() - 1))).to(value.device)
            init[name] = torch.where(seen, old, value)
        return init

    def e_step(self, x, index) -> dict:
        """HMC samples of p_theta(z | x) for the minibatch; returns {site: value}."""
        init = self._initial(x, index)
        kernel = HMC(self.model, step_size=self.step_size, num_steps=self.num_leapfrog,
                     adapt_step_size=self.warmup > 0, target_accept_prob=self.target_accept,
                     adapt_mass_matrix=False)
        mcmc = MCMC(kernel, num_samples=1, warmup_steps=self.warmup, initial_params=init,
                    disable_progbar=True)
        mcmc.run(x, **self.model_kwargs)
        self.step_size = float(kernel.step_size)
        samples = {k: v[-1].detach() for k, v in mcmc.get_samples().items()}
        for name, value in samples.items():
            self.state[name][index] = value
        self.seen[index] = True
        return samples

    def complete_log_likelihood(self, x, z: dict) -> torch.Tensor:
        """(1/B) sum_i log p_theta(x_i, z_i), differentiable in theta."""
        tr = poutine.trace(poutine.condition(self.model, data=z)).get_trace(x, **self.model_kwargs)
        return tr.log_prob_sum() / x.shape[0]

    def m_step(self, x, z: dict) -> float:
        """``m_steps`` Adam steps on theta; returns the last complete-data log-lik per point."""
        if self.optimizer is None:
            params = trainable_tensors(self.model, x, **self.model_kwargs)
            if not params:
                raise ConfigError("MonteCarloEM: the model has no trainable parameters")
            self.optimizer = torch.optim.Adam(params, lr=self.lr)
        value = float("nan")
        for _ in range(self.m_steps):
            loss = -self.complete_log_likelihood(x, z)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = -loss.item()
        return value

    def step(self, x, index) -> float:
        """One E-step and one M-step on the minibatch ``x`` (positions ``index``)."""
        index = torch.as_tensor(index, dtype=torch.long)
        store = pyro.get_param_store()
        before = set(store.keys())
        try:
            with pyro.validation_enabled(False):
                z = self.e_step(x, index)
                return self.m_step(x, z)
        finally:
            # An nn.Module model owns its weights; the copies HMC's tracing registers in Pyro's
            # global store would be picked up by a later model with the same names: drop them.
            # (A pyro.param model keeps its parameters in the store, where they belong.)
            if isinstance(self.model, nn.Module):
                for name in set(store.keys()) - before:
                    del store[name]
