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
``--eval-points`` training points, fixed seed), the wall time and the encoder-gradient variance
(as Dong et al.'s Fig. 5: ``--variance-draws`` G estimates of the gradient of the estimator
being trained, with its current baseline or control variate, at the current parameters on one
fixed minibatch of ``--batch-size`` training points; the per-coordinate variance over the G
draws, averaged over the encoder's parameters); at the end the 100-sample bound L_100 on the
test set (``--test-points``). Writes only under ``--out``: ``curves.csv`` (estimator, step,
seconds, train_elbo, encoder_variance), ``summary.csv`` and ``summary.md`` (final train ELBO,
test L_100, encoder variance, seconds per step), ``train_elbo.png`` and
``encoder_variance.png``.

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


def encoder_variance(objective, model, guide, x, draws: int, seed: int) -> float:
    """Mean over the encoder's parameters of the variance of ``draws`` estimates of the
    gradient (the objective's own ``loss_and_grads``, its state frozen: the decaying average is
    not updated, modules are not stepped) at the current parameters on the fixed minibatch
    ``x``. The global torch RNG state is restored, so training continues on the same draws."""
    params = [p for p in guide.parameters() if p.requires_grad]
    others = [*model.parameters(), *(p for m in objective.modules.values() for p in m.parameters())]
    frozen = getattr(objective.elbo, "frozen", None)
    if frozen is not None:
        objective.elbo.frozen = True
    rng = torch.get_rng_state()
    pyro.set_rng_seed(seed)
    grads = []
    for _ in range(draws):
        for p in (*params, *others):
            p.grad = None
        objective.loss_and_grads(model, guide, x)
        grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                for p in params]).double())
    for p in (*params, *others):
        p.grad = None
    torch.set_rng_state(rng)
    if frozen is not None:
        objective.elbo.frozen = frozen
    return float(torch.stack(grads).var(0).mean())


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
    x_var = data["train"][: args.batch_size]

    def record(step, seconds):
        rng = torch.get_rng_state()
        elbo = bound(model, guide, x_eval, 1, seed=123)
        torch.set_rng_state(rng)
        var = encoder_variance(objective, model, guide, x_var, args.variance_draws, seed=7)
        return name, step, seconds, elbo, var

    rows, seconds = [record(0, 0.0)], 0.0
    pyro.set_rng_seed(args.seed + 2)
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(data["train"]), (args.batch_size,), generator=gen).to(device)
        start = time.perf_counter()
        loss = svi.step(data["train"][idx])
        seconds += time.perf_counter() - start
        if not math.isfinite(loss):
            raise RuntimeError(f"{name}: non-finite loss at step {step}")
        if step % args.eval_every == 0 or step == args.steps:
            rows.append(record(step, seconds))
            print(f"{name:>12} step {step:>7} train ELBO {rows[-1][3]:9.2f}  encoder variance "
                  f"{rows[-1][4]:.3g}  {seconds:7.1f} s", flush=True)
    test = bound(model, guide, data["test"][: args.test_points], args.test_k, seed=321)
    return rows, {"estimator": name, "steps": args.steps, "train_elbo": rows[-1][3],
                  f"test_L{args.test_k}": test, "encoder_variance": rows[-1][4],
                  "seconds_per_step": seconds / args.steps}


def plot(curves, path, column: int, ylabel: str, batch_size: int, log: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r[0] for r in curves):
        pts = [(r[1], r[column]) for r in curves if r[0] == name]
        ax.plot(*zip(*pts), label=name)
    ax.set_xlabel(f"training step (batch {batch_size})")
    ax.set_ylabel(ylabel)
    ax.set_title("linear SBN 784-200-784, static binarized MNIST")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if log:
        ax.set_yscale("log")
    else:
        values = [r[column] for r in curves]
        ax.set_ylim(bottom=np.percentile([r[column] for r in curves if r[1] > 0] or values, 5))
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
    p.add_argument("--variance-draws", type=int, default=50,
                   help="gradient estimates per encoder-variance measurement (>= 2)")
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
        args.test_k, args.variance_draws = 10, 5
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
        w.writerow(["estimator", "step", "seconds", "train_elbo", "encoder_variance"])
        w.writerows(curves)
    keys = list(summary[0])
    with open(args.out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(summary)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    formats = {"seconds_per_step": "{:.4f}", "encoder_variance": "{:.3g}"}
    lines += ["| " + " | ".join(formats.get(k, "{:.2f}").format(r[k]) if isinstance(r[k], float)
                                 else str(r[k]) for k in keys) + " |" for r in summary]
    (args.out / "summary.md").write_text(
        f"Command: python benchmarks/sbn_estimators.py --steps {args.steps} "
        f"--estimators {','.join(names)}; torch {torch.__version__}, pyro {pyro.__version__}, "
        f"{args.threads} thread(s), device {args.device}.\n\n" + "\n".join(lines) + "\n")
    plot(curves, args.out / "train_elbo.png", 3, "training ELBO (nats)", args.batch_size)
    plot(curves, args.out / "encoder_variance.png", 4,
         f"encoder-gradient variance\n(mean over coordinates, {args.variance_draws} draws)",
         args.batch_size, log=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
