"""The hand-written PyTorch references that ``benchmarks/speed.py`` times ppl_vae against.

Plain torch for one architecture (encoder 784-500-500-2x50, decoder 50-500-500-784, ReLU,
Bernoulli likelihood, standard-normal prior): a VAE module, its training loop, a batched IWAE
step, a REINFORCE step with a decaying-average baseline, batched importance-sampling / naive
Monte Carlo evaluators and HMC-AIS. No ppl_vae import, here or in the training process:

    python benchmarks/references.py --objective trace --data bmnist.npz --epochs 3

prints one JSON line per epoch (``epoch``, ``seconds``, ``valid_elbo``), the same as the
per-epoch metrics of ``ppl-vae train`` that it is timed against; and

    python benchmarks/references.py evaluate --weights vae.pt --data bmnist.npz -k K --limit N \
        [--prior]

the hand-written evaluator that a fresh ``ppl-vae evaluate --estimator is`` (``--prior``:
``naive``) process is timed against: it loads a :class:`TorchVAE` state dict (the run's
checkpoint weights, :meth:`TorchVAE.load_pair`), the first N test points, estimates log p(x)
per point with K samples (:func:`log_px`) and prints one JSON line (``seconds`` of the
estimate, ``log_likelihood`` averaged over the points, ``n``, ``num_samples``,
``peak_rss_mb``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOG2PI = math.log(2 * math.pi)


def _std_normal(z):
    return (-0.5 * z.pow(2) - 0.5 * LOG2PI).sum(-1)


def _normal(z, loc, scale):
    return (-0.5 * ((z - loc) / scale).pow(2) - scale.log() - 0.5 * LOG2PI).sum(-1)


class TorchVAE(nn.Module):
    def __init__(self, x_dim=784, hidden=(500, 500), z_dim=50):
        super().__init__()
        h1, h2 = hidden
        self.enc = nn.Sequential(nn.Linear(x_dim, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
                                 nn.Linear(h2, 2 * z_dim))
        self.dec = nn.Sequential(nn.Linear(z_dim, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(),
                                 nn.Linear(h1, x_dim))

    def encode(self, x):
        loc, raw = self.enc(x).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-5

    def log_px(self, x, z):
        return -F.binary_cross_entropy_with_logits(
            self.dec(z), x.expand(z.shape[:-1] + x.shape[-1:]), reduction="none").sum(-1)

    def _reparam_log_weight(self, x, loc, scale, eps):
        z = loc + scale * eps
        log_qz = (-0.5 * eps.pow(2) - scale.log() - 0.5 * LOG2PI).sum(-1)
        return self.log_px(x, z) + _std_normal(z) - log_qz

    def elbo(self, x, analytic_kl=False):
        loc, scale = self.encode(x)
        eps = torch.randn_like(loc)
        if analytic_kl:
            kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1 - 2 * scale.log()).sum(-1)
            return self.log_px(x, loc + scale * eps) - kl
        return self._reparam_log_weight(x, loc, scale, eps)

    def log_weights(self, x, k, prior=False):
        """(k, B) log weights of IS with the encoder (or naive MC with the prior)."""
        loc, scale = self.encode(x)
        eps = torch.randn((k,) + loc.shape)
        if prior:
            return self.log_px(x, eps)
        return self._reparam_log_weight(x, loc, scale, eps)

    def load_pair(self, model, guide) -> TorchVAE:
        """Copy the weights of a ppl_vae VAE pair of the same architecture (``guide.encoder``,
        ``model.decoder``)."""
        self.enc.load_state_dict({k.replace("encoder.", ""): v
                                  for k, v in guide.state_dict().items()})
        self.dec.load_state_dict({k.replace("decoder.", ""): v
                                  for k, v in model.state_dict().items()})
        return self


def _descend(opt, loss) -> None:
    """One optimizer step on ``loss``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def reference_train(data: Path, objective: str, epochs: int, seed: int = 0) -> None:
    """The hand-written training script that ``ppl-vae train`` is timed against: Adam lr 1e-3,
    batch 100, the ELBO (``meanfield``: with the analytic KL), validation ELBO per epoch."""
    arrays = np.load(data)
    x = torch.as_tensor(arrays["train"], dtype=torch.float32)
    xv = torch.as_tensor(arrays["valid"], dtype=torch.float32)
    torch.manual_seed(seed)
    vae = TorchVAE(x.shape[1])
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    n = x.shape[0]
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for idx in torch.randperm(n).split(100):
            _descend(opt, -vae.elbo(x[idx], objective == "meanfield").sum() * (n / len(idx)))
        with torch.no_grad():
            valid = sum(float(vae.elbo(xv[i:i + 1000]).sum()) for i in range(0, len(xv), 1000))
        print(json.dumps({"epoch": epoch + 1, "seconds": time.perf_counter() - t0,
                          "valid_elbo": valid / len(xv)}), flush=True)


def iwae_step(vae, opt, x, k, n):
    """One batched IWAE-k step on the minibatch ``x`` of a data set of ``n`` points."""
    log_w = vae.log_weights(x, k)
    loss = -(torch.logsumexp(log_w, 0) - math.log(k)).sum() * (n / x.shape[0])
    _descend(opt, loss)


class Reinforce:
    """Score-function step for the encoder with a decaying-average baseline per batch position
    (Pyro's ``use_decaying_avg_baseline``), pathwise-free: z is drawn without a gradient."""

    def __init__(self, beta=0.9):
        self.beta, self.avg = beta, None

    def step(self, vae, opt, x, n):
        loc, scale = vae.encode(x)
        z = (loc + scale * torch.randn_like(loc)).detach()
        log_q = _normal(z, loc, scale)
        log_p = vae.log_px(x, z) + _std_normal(z)
        cost = (log_p - log_q).detach() * (n / x.shape[0])
        self.avg = cost if self.avg is None else self.beta * self.avg + (1 - self.beta) * cost
        surrogate = (log_p - log_q) * (n / x.shape[0]) + (cost - self.avg) * log_q
        _descend(opt, -surrogate.sum())


@torch.no_grad()
def log_px(vae, x, k, prior=False, budget=10_000):
    """log p(x) per point by importance sampling with the encoder (``prior``: naive Monte Carlo
    from the prior), K = ``k``, in blocks of ``budget // k`` points."""
    b = max(1, budget // k)
    out = []
    for i in range(0, x.shape[0], b):
        lw = vae.log_weights(x[i:i + b], k, prior=prior)
        out.append(torch.logsumexp(lw.double(), 0) - math.log(k))
    return torch.cat(out)


def ais_parts(vae, x, chains):
    """``(parts, loc, scale)``: ``parts(z) = (log q, log p(x, z), grad log q, grad log p)`` for
    ``z`` of shape (chains, points, latent), the plain-torch gradient of AIS's annealed
    log-density (one leapfrog step's work), and the encoder's q(z|x)."""
    with torch.no_grad():
        loc, scale = vae.encode(x)
    xe = x.expand(chains, *x.shape)

    def parts(z):
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            log_q = _normal(z, loc, scale)
            log_p = vae.log_px(xe, z) + _std_normal(z)
            gq = torch.autograd.grad(log_q.sum(), z, retain_graph=True)[0]
            gp = torch.autograd.grad(log_p.sum(), z)[0]
        return log_q.detach(), log_p.detach(), gq, gp

    return parts, loc, scale


def ais(vae, x, chains, steps, leapfrog, eps0=0.05, target=0.65):
    """HMC-AIS from the encoder to the posterior along the geometric path with the sigmoid
    schedule and per-point step-size adaptation — the same algorithm as
    ``ppl_vae.marginal.annealed_importance_sampling``, written for this VAE alone."""
    s = torch.sigmoid(torch.linspace(-4.0, 4.0, steps + 1, dtype=torch.float64))
    betas = ((s - s[0]) / (s[-1] - s[0])).tolist()
    parts, loc, scale = ais_parts(vae, x, chains)
    z = loc + scale * torch.randn(chains, *loc.shape)
    a, b, ga, gb = parts(z)
    logw = torch.zeros(chains, x.shape[0], dtype=torch.float64)
    eps = torch.full((x.shape[0], 1), eps0)
    avg = torch.full((x.shape[0],), target, dtype=torch.float64)
    for t in range(1, steps + 1):
        logw += (betas[t] - betas[t - 1]) * (b - a).double()
        if t == steps:
            break
        beta = betas[t]
        p0 = torch.randn_like(z)
        p = p0 + 0.5 * eps * ((1 - beta) * ga + beta * gb)
        zn = z
        for i in range(leapfrog):
            zn = zn + eps * p
            a1, b1, ga1, gb1 = parts(zn)
            p = p + (1.0 if i < leapfrog - 1 else 0.5) * eps * ((1 - beta) * ga1 + beta * gb1)
        h0 = -((1 - beta) * a + beta * b) + 0.5 * p0.pow(2).sum(-1)
        h1 = -((1 - beta) * a1 + beta * b1) + 0.5 * p.pow(2).sum(-1)
        prob = torch.exp((h0 - h1).double().clamp(max=0.0)).nan_to_num(0.0)
        acc = torch.rand_like(prob) < prob
        m = acc[..., None]
        z, ga, gb = torch.where(m, zn, z), torch.where(m, ga1, ga), torch.where(m, gb1, gb)
        a, b = torch.where(acc, a1, a), torch.where(acc, b1, b)
        avg = 0.9 * avg + 0.1 * prob.mean(0)
        eps = torch.where(avg[:, None] > target, eps * 1.02, eps * 0.98).clamp(1e-4, 0.5).float()
    return torch.logsumexp(logw, 0) - math.log(chains)


def reference_evaluate(argv) -> None:
    """The fresh-process evaluator (module docstring)."""
    p = argparse.ArgumentParser(prog="references.py evaluate")
    p.add_argument("--weights", type=Path, required=True, help="a TorchVAE state dict (.pt)")
    p.add_argument("--data", type=Path, required=True, help=".npz with a test array")
    p.add_argument("--samples", "-k", type=int, required=True)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--prior", action="store_true", help="naive Monte Carlo (prior proposal)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with np.load(args.data) as f:
        x = torch.as_tensor(f["test"][:args.limit], dtype=torch.float32)
    vae = TorchVAE(x.shape[1])
    vae.load_state_dict(torch.load(args.weights, map_location="cpu"))
    vae.eval()
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    ll = log_px(vae, x, args.samples, prior=args.prior)
    seconds = time.perf_counter() - t0
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "log_likelihood": float(ll.mean()), "n": len(ll),
                      "num_samples": args.samples, "peak_rss_mb": peak}), flush=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["evaluate"]:
        reference_evaluate(argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objective", required=True, choices=("trace", "meanfield"))
    p.add_argument("--data", type=Path, required=True, help=".npz with train and valid")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    reference_train(args.data, args.objective, args.epochs, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
