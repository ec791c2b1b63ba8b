"""Epoch time of ppl_vae's training loop vs a hand-written PyTorch VAE vs Pyro's stock SVI.

Same architecture for all three (encoder 784-500-500-2*50, decoder 50-500-500-784, ReLU,
Bernoulli likelihood, batch 100, Adam lr 1e-3), same data (binarized MNIST train split, 500 steps
per epoch), measured in the same process, interleaved, median over repeats:

* ``torch``      — hand-written: encoder, reparameterized sample, one-sample MC ELBO
                   (log p(x|z) + log p(z) - log q(z|x)), backward, ``torch.optim.Adam`` with its
                   defaults — the reference the ratios are taken against;
* ``torch_fused``— the same with ``Adam(fused=True)``, the fastest hand-written loop we know;
* ``ppl_vae``    — ``ppl_vae.train`` (our model/guide, Trace_ELBO, our SVI with one fused Adam),
                   timing the epoch with a 100-point validation split so validation is negligible;
* ``pyro_svi``   — ``pyro.infer.SVI(model, guide, pyro.optim.Adam, Trace_ELBO())`` over the same
                   model/guide, the way Pyro's VAE example trains.

Usage: python benchmarks/training_speed.py [--data binarized-mnist] [--epochs 1] [--repeats 3]
Prints a table and the ratios to ``torch``; ``--csv PATH`` also writes it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import pandas as pd
import pyro
import pyro.optim
import torch
from torch import nn
from torch.nn import functional as F

import ppl_vae
from ppl_vae.builders import build_model_and_guide
from ppl_vae.config import TrainConfig
from ppl_vae.data import Dataset, load_dataset


class TorchVAE(nn.Module):
    def __init__(self, x_dim=784, hidden=(500, 500), z_dim=50):
        super().__init__()
        h1, h2 = hidden
        self.enc = nn.Sequential(nn.Linear(x_dim, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
                                 nn.Linear(h2, 2 * z_dim))
        self.dec = nn.Sequential(nn.Linear(z_dim, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(),
                                 nn.Linear(h1, x_dim))

    def loss(self, x, num_data):
        loc, raw = self.enc(x).chunk(2, -1)
        scale = F.softplus(raw) + 1e-5
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        logits = self.dec(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        log_pz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_qz = (-0.5 * eps.pow(2) - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        return -(log_px + log_pz - log_qz).sum() * (num_data / x.shape[0])


def epoch_torch(x, batch_size, seed, **adam_args):
    torch.manual_seed(seed)
    vae = TorchVAE()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3, **adam_args)
    n = x.shape[0]
    t0 = time.perf_counter()
    perm = torch.randperm(n)
    for i in range(0, n, batch_size):
        loss = vae.loss(x[perm[i:i + batch_size]], n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0, float(loss) / n


def epoch_ppl_vae(ds, batch_size, seed):
    cfg = TrainConfig(data="benchmark", latent_dims=(50,), hidden=(500, 500), batch_size=batch_size,
                      epochs=1, seed=seed)
    res = ppl_vae.train(cfg, dataset=ds, progress=False)
    row = res.metrics.iloc[-1]
    return float(row.seconds), -float(row.train_elbo)


def epoch_pyro_svi(x, batch_size, seed):
    pyro.clear_param_store()  # stock SVI optimizes what the global param store holds
    pyro.set_rng_seed(seed)
    cfg = TrainConfig(latent_dims=(50,), hidden=(500, 500))
    model, guide = build_model_and_guide(cfg, x.shape[1])
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO())
    n = x.shape[0]
    t0 = time.perf_counter()
    perm = torch.randperm(n)
    for i in range(0, n, batch_size):
        loss = svi.step(x[perm[i:i + batch_size]], num_data=n)
    return time.perf_counter() - t0, loss / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="binarized-mnist")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)

    full = load_dataset(args.data, likelihood="bernoulli")
    if not full.binary:
        raise SystemExit("this benchmark wants binary data (binarized-mnist)")
    ds = Dataset("benchmark", full.train, full.valid[:100], full.test[:100], full.image_shape)
    x = full.train
    runners = {
        "torch": lambda s: epoch_torch(x, args.batch_size, s),
        "torch_fused": lambda s: epoch_torch(x, args.batch_size, s, fused=True),
        "ppl_vae": lambda s: epoch_ppl_vae(ds, args.batch_size, s),
        "pyro_svi": lambda s: epoch_pyro_svi(x, args.batch_size, s),
    }
    for name, fn in runners.items():  # warm-up: first-call costs (allocator, lazy imports)
        fn(0)
    rows = []
    for r in range(args.repeats):
        for name, fn in runners.items():
            seconds, loss = fn(r + 1)
            rows.append({"impl": name, "repeat": r, "epoch_seconds": seconds,
                         "final_minibatch_loss_per_point": loss})
            print(f"repeat {r} {name:9s} {seconds:7.2f} s/epoch", flush=True)
    df = pd.DataFrame(rows)
    summary = df.groupby("impl", sort=False).epoch_seconds.median().rename("median_s").to_frame()
    summary["ratio_to_torch"] = summary.median_s / summary.loc["torch", "median_s"]
    summary["ms_per_step"] = 1000 * summary.median_s / math.ceil(x.shape[0] / args.batch_size)
    print(f"\nthreads={torch.get_num_threads()} steps/epoch={math.ceil(x.shape[0] / args.batch_size)}"
          f" repeats={args.repeats}")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        df.to_csv(args.csv, index=False)
    return summary


if __name__ == "__main__":
    main()
