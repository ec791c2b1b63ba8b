"""Hand-written PyTorch gradient estimators for the linear sigmoid belief network (issue 19).

The references ``benchmarks/speed.py --only discrete`` times the discrete-latent objectives
against: plain torch for one model — the single-layer SBN of the DisARM protocol, z ~
Bernoulli(sigmoid(b)) (J latents), x | z ~ Bernoulli(sigmoid(W z + c)), q(z | x) =
Bernoulli(sigmoid(A x + d)) — and one function per estimator, each the same estimator as the
ppl_vae objective of the same name (same surrogate terms, same random draws in the same order:
``tests/benchmarks/test_sbn_references.py`` checks the gradients agree):

* ``score_loo(k)`` — REINFORCE with the leave-one-out baseline (``score-loo-K``);
* ``vimco(k)`` — VIMCO (``vimco-K``);
* ``arm``, ``disarm`` — one antithetic pair (``arm``, ``disarm``);
* ``rebar`` — REBAR with fixed eta and temperature (``rebar``);
* :class:`Relax` — RELAX with the control variate eta f(sigmoid(z / lambda)) + r(x, z) and its
  variance gradient (``relax``).

Each ``*_grads(sbn, x, scale)`` accumulates the gradient of the loss (minus the estimate, for
the minibatch estimate of the full-data objective, ``scale`` = N / batch size) into ``.grad``
and returns the loss; :func:`step` adds the optimizer step. No ppl_vae import.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TorchSBN(nn.Module):
    """The linear SBN: prior logits ``b``, encoder ``enc`` (x -> logits), decoder ``dec``."""

    def __init__(self, x_dim: int = 784, latent: int = 200):
        super().__init__()
        self.prior_logits = nn.Parameter(torch.zeros(latent))
        self.enc = nn.Linear(x_dim, latent)
        self.dec = nn.Linear(latent, x_dim)

    def load_pair(self, model, guide) -> TorchSBN:
        """Copy the weights of a ppl_vae ``SigmoidBeliefNetwork(hidden=())`` /
        ``BernoulliGuide(hidden=())`` pair."""
        with torch.no_grad():
            self.prior_logits.copy_(model.prior_logits)
            self.dec.load_state_dict(model.decoder[0].state_dict())
            self.enc.load_state_dict(guide.encoder[0].state_dict())
        return self

    def log_p(self, x, z, detached: bool = False):
        """log p(x, z) per sample and point; with ``detached``, the parameters held fixed."""
        b, w, c = self.prior_logits, self.dec.weight, self.dec.bias
        if detached:
            b, w, c = b.detach(), w.detach(), c.detach()
        prior = -F.binary_cross_entropy_with_logits(b.expand(z.shape), z, reduction="none")
        logits = F.linear(z, w, c)
        return prior.sum(-1) + F.logsigmoid(logits * (2 * x - 1)).sum(-1)

    @staticmethod
    def log_q(logits, z):
        return -F.binary_cross_entropy_with_logits(logits.expand(z.shape), z,
                                                   reduction="none").sum(-1)


def step(grads_fn, sbn, opt, x, scale, *args) -> float:
    """One optimizer step with the estimator ``grads_fn``."""
    opt.zero_grad(set_to_none=True)
    loss = grads_fn(sbn, x, scale, *args)
    opt.step()
    return loss


def score_loo_grads(sbn, x, scale, k=2) -> float:
    alpha = sbn.enc(x)
    z = torch.bernoulli(torch.sigmoid(alpha.detach()).expand((k,) + alpha.shape))
    log_q = sbn.log_q(alpha, z)
    f = sbn.log_p(x, z) - log_q  # (k, N)
    fd = f.detach()
    signal = fd - (fd.sum(0, keepdim=True) - fd) / (k - 1)
    surrogate = (signal * log_q).sum() / k + f.mean(0).sum()
    (-scale * surrogate).backward()
    return -scale * float(f.detach().mean(0).sum())


def vimco_grads(sbn, x, scale, k=2) -> float:
    alpha = sbn.enc(x)
    z = torch.bernoulli(torch.sigmoid(alpha.detach()).expand((k,) + alpha.shape))
    log_q = sbn.log_q(alpha, z)
    log_w = sbn.log_p(x, z) - log_q
    bound = torch.logsumexp(log_w, 0) - math.log(k)
    with torch.no_grad():
        lw = log_w.detach()
        loo = (lw.sum(0, keepdim=True) - lw) / (k - 1)
        eye = torch.eye(k, dtype=torch.bool).reshape(k, k, 1)
        replaced = torch.where(eye, loo.unsqueeze(1), lw.unsqueeze(0))
        signal = bound.detach() - (torch.logsumexp(replaced, 1) - math.log(k))
        weights = torch.softmax(lw, 0)
    surrogate = (signal * log_q).sum() + (weights * log_w).sum()
    (-scale * surrogate).backward()
    return -scale * float(bound.detach().sum())


def _antithetic(sbn, x, scale, disarm: bool) -> float:
    alpha = sbn.enc(x)
    u = torch.rand(alpha.shape)
    probs = torch.sigmoid(alpha.detach())
    b1, b2 = (u < probs).to(alpha.dtype), (1.0 - u < probs).to(alpha.dtype)
    lp1, lp2 = sbn.log_p(x, b1), sbn.log_p(x, b2)
    f1 = (lp1 - sbn.log_q(alpha, b1)).detach()
    f2 = (lp2 - sbn.log_q(alpha, b2)).detach()
    if disarm:
        signal = (0.5 * (f1 - f2)[:, None] * (1.0 - 2.0 * b2) * (b1 != b2).to(alpha.dtype)
                  * torch.sigmoid(alpha.detach().abs()))
    else:
        signal = (f2 - f1)[:, None] * (u - 0.5)
    # theta: the pair's average of grad log p; phi: the signal on the logits
    surrogate = 0.5 * (lp1.sum() + lp2.sum()) + (signal * alpha).sum()
    (-scale * surrogate).backward()
    return -scale * float(0.5 * (f1 + f2).sum())


def arm_grads(sbn, x, scale) -> float:
    return _antithetic(sbn, x, scale, disarm=False)


def disarm_grads(sbn, x, scale) -> float:
    return _antithetic(sbn, x, scale, disarm=True)


def _logit(p):
    eps = torch.finfo(p.dtype).eps
    p = p.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def _rebar_noise(alpha):
    """z = alpha + logistic noise, b = H(z), z~ ~ p(z | b), both differentiable in alpha."""
    u, v = torch.rand(alpha.shape), torch.rand(alpha.shape)
    z = alpha + _logit(u)
    b = (z > 0).to(alpha.dtype)
    theta = torch.sigmoid(alpha)
    u_cond = b * (1 - theta + v * theta) + (1 - b) * (v * (1 - theta))
    return z, b, alpha + _logit(u_cond)


def rebar_grads(sbn, x, scale, temperature=0.5, eta=1.0) -> float:
    alpha = sbn.enc(x)
    z, b, zt = _rebar_noise(alpha)
    log_q = sbn.log_q(alpha, b)
    lp = sbn.log_p(x, b)
    f_b = lp - log_q.detach()

    def control(zz):  # eta f(sigmoid(zz / lambda)), parameters held fixed
        s = torch.sigmoid(zz / temperature)
        return eta * (sbn.log_p(x, s, detached=True) - sbn.log_q(alpha.detach(), s))

    c_z, c_zt = control(z), control(zt)
    surrogate = (lp.sum() + ((f_b.detach() - c_zt.detach()) * log_q).sum()
                 + (c_z - c_zt).sum())
    (-scale * surrogate).backward()
    return -scale * float(f_b.detach().sum())


class Relax(nn.Module):
    """RELAX's control variate c(z) = eta f(sigmoid(z / lambda)) + r(x, z), r an MLP with one
    LeakyReLU(0.3) hidden layer, and the estimator: :meth:`grads` accumulates the estimate's
    loss gradient into the SBN's ``.grad`` and d ||g_phi||^2 / d psi (phi: the encoder's weight
    and bias) into this module's."""

    def __init__(self, x_dim=784, latent=200, hidden=137, temperature=0.5, eta=1.0):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.eta = nn.Parameter(torch.tensor(float(eta)))
        self.net = nn.Sequential(nn.Linear(latent + x_dim, hidden), nn.LeakyReLU(0.3),
                                 nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def load(self, control_variate) -> Relax:
        """Copy a ppl_vae ``RelaxControlVariate`` (with one hidden layer, materialized)."""
        self.load_state_dict(control_variate.state_dict())
        return self

    def _control(self, sbn, x, alpha, zz):
        """c at the leaf ``zz`` and dc/dzz, with a graph to this module's parameters."""
        leaf = zz.detach().requires_grad_()
        s = torch.sigmoid(leaf / self.log_temperature.exp())
        f = sbn.log_p(x, s, detached=True) - sbn.log_q(alpha.detach(), s)
        c = self.eta * f + self.net(torch.cat([leaf, x], -1)).squeeze(-1)
        (g,) = torch.autograd.grad(c.sum(), leaf, create_graph=True)
        return c, g

    def grads(self, sbn, x, scale) -> float:
        alpha = sbn.enc(x)
        z, b, zt = _rebar_noise(alpha)
        log_q = sbn.log_q(alpha, b)
        lp = sbn.log_p(x, b)
        f_b = (lp - log_q).detach()
        _, g_z = self._control(sbn, x, alpha, z)
        c_zt, g_zt = self._control(sbn, x, alpha, zt)
        hard = (lp.sum() + ((f_b - c_zt.detach()) * log_q).sum()
                + (z * g_z.detach()).sum() - (zt * g_zt.detach()).sum())
        soft = (((f_b - c_zt) * log_q).sum() + (z * g_z).sum() - (zt * g_zt).sum())
        g_phi = torch.autograd.grad(scale * soft, [sbn.enc.weight, sbn.enc.bias],
                                    create_graph=True)
        variance = sum(g.pow(2).sum() for g in g_phi)
        psi = list(self.parameters())
        for p, g in zip(psi, torch.autograd.grad(variance, psi, retain_graph=True)):
            p.grad = g if p.grad is None else p.grad + g
        (-scale * hard).backward()
        return -scale * float(f_b.sum())


def relax_grads(sbn, x, scale, relax: Relax) -> float:
    return relax.grads(sbn, x, scale)
