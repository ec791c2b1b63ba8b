"""Gradient estimators for discrete latents on the single-layer sigmoid belief network (issue 19).

The DisARM single-stochastic-layer protocol (Dong, Mnih & Tucker 2020, sec. 6.2, linear model):
200 Bernoulli latents, linear encoder 784 -> 200 and decoder 200 -> 784, batch 50, Adam with
learning rate 1e-4, decoder output bias initialised at the logit of the training-set pixel means,
2 samples per step for every estimator (one antithetic pair for ARM / DisARM, K = 2 for VIMCO,
RWS and the leave-one-out baseline). Every estimator trains a copy of the same initial weights on
the same minibatch sequence. Differences from the paper: the *static* binarization of MNIST
(``../shared/data/binarized_mnist.npz``, 50000 training points) instead of dynamic binarization,
and as many steps as the budget allows instead of 10^6.

Recorded every ``--eval-every`` steps: the training ELBO (1-sample ELBO on a fixed subset of
``--eval-points`` training points, fixed seed) and the wall time; at the end the 100-sample
bound L_100 on the test set (``--test-points``). Writes only under ``--out``:
``curves.csv`` (estimator, step, seconds, train_elbo), ``summary.csv`` and ``summary.md``
(final train ELBO, test L_100, seconds per step) and ``train_elbo.png``.

    python benchmarks/sbn_estimators.py --steps 20000 --out /tmp/sbn       # CPU, a few hours
    python benchmarks/sbn_estimators.py --smoke --out /tmp/sbn-smoke        # seconds
    python benchmarks/sbn_estimators.py --steps 1000000 --device cuda --out runs/sbn-1m  # paper
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import time
from pathlib import Path

import numpy as np
import pyro
import torch

from ppl_vae.errors import ConfigError
from ppl_vae.guides import BernoulliGuide
from ppl_vae.infer.objectives import make_objective
from ppl_vae.infer.svi import SVI
from ppl_vae.models import SigmoidBeliefNetwork
from ppl_vae.nn import last_linear

DEFAULT_ESTIMATORS = ["score-avg-2", "score-nn-2", "score-loo-2", "vimco-2", "arm", "disarm",
                      "gumbel-st-2", "rws-2", "rebar", "relax"]
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "binarized_mnist.npz"


def load(path, device):
    data = np.load(path)
    return {k: torch.from_numpy(data[k].astype(np.float32)).to(device) for k in ("train", "test")}


def build(x_train, latent: int, seed: int, device):
    torch.manual_seed(seed)
    model = SigmoidBeliefNetwork(x_train.shape[1], latent, hidden=()).to(device)
    guide = BernoulliGuide(x_train.shape[1], latent, hidden=()).to(device)
    mean = x_train.mean(0).clamp(1e-3, 1 - 1e-3)
    with torch.no_grad():
        last_linear(model.decoder).bias.copy_(torch.log(mean) - torch.log1p(-mean))
    return model, guide


@torch.no_grad()
def bound(model, guide, x, k: int, seed: int, chunk: int = 500) -> float:
    """L_k per data point (L_1 = ELBO), averaged over ``x``; fixed seed."""
    pyro.set_rng_seed(seed)
    objective = make_objective("trace" if k == 1 else f"rws-{k}")
    total = sum(objective.loss(model, guide, x[i:i + chunk]) for i in range(0, len(x), chunk))
    return -total / len(x)


def objective_for(name: str, x_dim: int):
    """A registry name; ``score-avg-2`` etc. (names without a -K suffix in the registry) mean
    that objective with 2 particles per data point."""
    try:
        return make_objective(name, x_dim=x_dim)
    except ConfigError:
        m = re.fullmatch(r"(.+)-(\d+)", name)
        if not m:
            raise
        return make_objective(m.group(1), num_particles=int(m.group(2)), x_dim=x_dim)


def train(name, data, args, device):
    model, guide = build(data["train"], args.latent, args.seed, device)
    objective = objective_for(name, data["train"].shape[1])
    for module in objective.modules.values():  # baselines, control variates: on the device
        module.to(device)
    svi = SVI(model, guide, objective, lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x_eval = data["train"][: args.eval_points]
    rows, seconds = [], 0.0
    rows.append((name, 0, 0.0, bound(model, guide, x_eval, 1, seed=123)))
    pyro.set_rng_seed(args.seed + 2)
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(data["train"]), (args.batch_size,), generator=gen).to(device)
        start = time.perf_counter()
        loss = svi.step(data["train"][idx])
        seconds += time.perf_counter() - start
        if not math.isfinite(loss):
            raise RuntimeError(f"{name}: non-finite loss at step {step}")
        if step % args.eval_every == 0 or step == args.steps:
            rng = torch.get_rng_state()
            rows.append((name, step, seconds, bound(model, guide, x_eval, 1, seed=123)))
            torch.set_rng_state(rng)
            print(f"{name:>12} step {step:>7} train ELBO {rows[-1][3]:9.2f}  {seconds:7.1f} s",
                  flush=True)
    test = bound(model, guide, data["test"][: args.test_points], args.test_k, seed=321)
    return rows, {"estimator": name, "steps": args.steps, "train_elbo": rows[-1][3],
                  f"test_L{args.test_k}": test, "seconds_per_step": seconds / args.steps}


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r[0] for r in curves):
        pts = [(r[1], r[3]) for r in curves if r[0] == name]
        ax.plot(*zip(*pts), label=name)
    ax.set_xlabel("training step (batch 50)")
    ax.set_ylabel("training ELBO (nats)")
    ax.set_title("linear SBN 784-200-784, static binarized MNIST")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    lo = np.percentile([r[3] for r in curves if r[1] > 0] or [r[3] for r in curves], 5)
    ax.set_ylim(bottom=lo)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--estimators", default=",".join(DEFAULT_ESTIMATORS))
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-points", type=int, default=2000)
    p.add_argument("--test-points", type=int, default=10000)
    p.add_argument("--test-k", type=int, default=100)
    p.add_argument("--latent", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true",
                   help="a few steps on a few points (seconds): checks the pipeline only")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load(args.data, device)
    if args.smoke:
        args.steps, args.eval_every, args.eval_points, args.test_points = 6, 3, 100, 100
        args.test_k = 10
        data = {"train": data["train"][:500], "test": data["test"][:100]}
    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    curves, summary = [], []
    for name in names:
        rows, row = train(name, data, args, device)
        curves += rows
        summary.append(row)
    with open(args.out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["estimator", "step", "seconds", "train_elbo"])
        w.writerows(curves)
    keys = list(summary[0])
    with open(args.out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(summary)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(f"{r[k]:.2f}" if isinstance(r[k], float) and k != "seconds_per_step"
                                 else f"{r[k]:.4f}" if k == "seconds_per_step" else str(r[k])
                                 for k in keys) + " |" for r in summary]
    (args.out / "summary.md").write_text(
        f"Command: python benchmarks/sbn_estimators.py --steps {args.steps} "
        f"--estimators {','.join(names)}; torch {torch.__version__}, pyro {pyro.__version__}, "
        f"{args.threads} thread(s), device {args.device}.\n\n" + "\n".join(lines) + "\n")
    plot(curves, args.out / "train_elbo.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
