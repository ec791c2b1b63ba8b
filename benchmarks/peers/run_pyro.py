"""The VAE in plain Pyro: ``pyro.infer.SVI`` with ``JitTrace_ELBO`` or ``Trace_ELBO``.

Written the way Pyro's own VAE example (``examples/vae/vae.py``) sets it up: an encoder and a
decoder ``nn.Module``, a model that registers the decoder with ``pyro.module`` and samples the
latent and the pixels inside ``pyro.plate``, a guide that registers the encoder, distribution
argument validation switched off, ``pyro.optim.Adam({"lr": 1e-3})``, one ``svi.step`` per
minibatch and ``svi.evaluate_loss`` for the validation ELBO. Batches are drawn from one
in-memory tensor (as the hand-written torch reference does) rather than a ``DataLoader``.
Runs in the project's environment:

    python benchmarks/peers/run_pyro.py --elbo jit --data bmnist.npz --epochs 3
"""

from __future__ import annotations

import sys
import time

import _runner
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.optim import Adam
from torch import nn


def mlp(sizes) -> nn.Sequential:
    """Linear layers of ``sizes`` with ReLU between them."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class PyroVAE(nn.Module):
    """Encoder 784-500-500-2x50 (scale = softplus + 1e-5), decoder 50-500-500-784 (logits)."""

    def __init__(self):
        super().__init__()
        h = _runner.HIDDEN
        self.encoder = mlp((_runner.X_DIM, *h, 2 * _runner.Z_DIM))
        self.decoder = mlp((_runner.Z_DIM, *reversed(h), _runner.X_DIM))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(x.shape[0], _runner.Z_DIM), 1.0).to_event(1)
            z = pyro.sample("latent", prior)
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("latent", dist.Normal(loc, F.softplus(raw) + 1e-5).to_event(1))


def main(argv=None) -> int:
    p = _runner.parser(__doc__)
    p.add_argument("--elbo", choices=("jit", "trace"), default="jit")
    args = p.parse_args(argv)
    _runner.meta(f"pyro-{args.elbo}", "pyro-ppl", "torch", torch_threads=torch.get_num_threads())
    train, valid = (torch.as_tensor(a) for a in _runner.load(args.data))
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    pyro.distributions.enable_validation(False)
    vae = PyroVAE()
    svi = SVI(vae.model, vae.guide, Adam({"lr": _runner.LR}),
              loss=JitTrace_ELBO() if args.elbo == "jit" else Trace_ELBO())
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        for idx in torch.randperm(len(train)).split(_runner.BATCH):
            svi.step(train[idx])
        loss = sum(svi.evaluate_loss(valid[i:i + _runner.EVAL_CHUNK])
                   for i in range(0, len(valid), _runner.EVAL_CHUNK))
        _runner.report(epoch, time.perf_counter() - t0, -loss / len(valid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
