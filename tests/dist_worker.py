"""Worker of tests/test_distributed.py, run by torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py OUT.pt

Each rank takes one SVI step on its shard of a fixed global batch and rank 0 saves the gradient
SVI applied, then a few ``score-avg`` steps check that the ranks stay identical. Without a
process group (imported by the test), :func:`one_step_gradients` gives the single-process step.
"""

from __future__ import annotations

import sys

import pyro
import torch
from pyro.poutine.messenger import Messenger

from ppl_vae.infer.svi import SVI
from ppl_vae.io.data import load_dataset
from ppl_vae.training import distributed
from ppl_vae.training.builders import build_model_and_guide
from ppl_vae.training.config import TrainConfig

GLOBAL_BATCH = 8
NUM_DATA = 1000


class FixedNoise(Messenger):
    """The guide's z = loc + scale * eps with a given eps per data point: a reparameterized
    sample that uses no RNG, so the gradient is a fixed function of the data and eps."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def _pyro_sample(self, msg):
        if msg["name"] == "z" and not msg["is_observed"]:
            base = msg["fn"].base_dist
            msg["value"] = base.loc + base.scale * self.eps


def _pair():
    pyro.set_rng_seed(0)
    return build_model_and_guide(TrainConfig(latent_dims=(2,), hidden=(16,)), 64)


def fixed_batch(n=GLOBAL_BATCH):
    x = (load_dataset("digits").train[:n] > 0.5).float()
    eps = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
    return x, eps


def one_step_gradients(start=None, stop=None):
    """``(gradients, loss)`` of one ``meanfield`` step on points [start, stop) of the fixed
    batch (default: this rank's shard), combined across ranks by GradientSync."""
    x, eps = fixed_batch()
    if start is None:
        start, stop = distributed.shard_bounds(GLOBAL_BATCH)
    model, guide = _pair()
    svi = SVI(model, FixedNoise(eps[start:stop])(guide), "meanfield", modules=(model, guide))
    sync = distributed.GradientSync()
    sync.weight = (stop - start) / GLOBAL_BATCH
    seen = {}

    def hook(svi_, loss):
        seen["loss"] = sync(svi_, loss)
        seen["grads"] = [p.grad.clone() for p in svi_.parameters()]
        return seen["loss"]

    svi.grad_hook = hook
    svi.step(x[start:stop], num_data=NUM_DATA)
    return seen["grads"], seen["loss"]


def score_avg_state(steps=3):
    """Parameters and decaying-average baselines after ``steps`` data-parallel ``score-avg``
    steps, the ranks drawing different noise."""
    x, _ = fixed_batch(16)
    start, stop = distributed.shard_bounds(16)
    model, guide = _pair()
    svi = SVI(model, guide, "score-avg", modules=(model, guide))
    svi.grad_hook = sync = distributed.GradientSync()
    sync.weight = (stop - start) / 16
    pyro.set_rng_seed(100 + distributed.rank())
    for _ in range(steps):
        svi.step(x[start:stop], num_data=NUM_DATA)
    params = torch.cat([p.detach().reshape(-1) for p in svi.parameters()])
    return params, dict(svi.objective.elbo.averages)


def main(out):
    with distributed.process_group("cpu", timeout=60):
        grads, loss = one_step_gradients()
        states = distributed.gather(score_avg_state())
        if distributed.is_main():
            torch.save({"grads": grads, "loss": loss, "states": states,
                        "world": distributed.world_size()}, out)


if __name__ == "__main__":
    main(sys.argv[1])
