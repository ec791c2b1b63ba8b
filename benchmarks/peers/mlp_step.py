"""The bare networks of the peers' VAE step: forward and backward of the 784-500-500-100 encoder
and 50-500-500-784 decoder MLPs (ReLU, batch 100, loss = sum of squares), no distributions,
no optimizer. It separates what the matrix products cost from what a library adds around them.

    python benchmarks/peers/mlp_step.py --library torch-eager
    python benchmarks/peers/mlp_step.py --library torch-compiled [--profile]
    PEERS_VENV/bin/python benchmarks/peers/mlp_step.py --library jax   # the peers' venv

Prints ms per step (median of --rounds 5 of --steps 200, min-max) and GFLOP/s; writes nothing.
``--profile`` (torch) adds torch.profiler's time per ``aten::mm`` / ``aten::addmm`` call.
"""

from __future__ import annotations

import argparse
import statistics
import time

SIZES = [(784, 500), (500, 500), (500, 100), (50, 500), (500, 500), (500, 784)]
FLOPS = 3 * 2 * 100 * sum(a * b for a, b in SIZES)  # forward + two backward products


def torch_step(compiled: bool):
    import torch

    torch.manual_seed(0)
    params = [(torch.randn(b, a).mul_(0.03).requires_grad_(), torch.zeros(b, requires_grad=True))
              for a, b in SIZES]
    flat = [t for p in params for t in p]

    def mlp(h, layers):
        for j, (w, b) in enumerate(layers):
            h = torch.nn.functional.linear(h, w, b)
            h = torch.relu(h) if j < len(layers) - 1 else h
        return h

    def step(x):
        e = mlp(x, params[:3])
        d = mlp(e[:, :50], params[3:])
        loss = (d * d).sum() + (e * e).sum()
        return loss, torch.autograd.grad(loss, flat)

    return (torch.compile(step) if compiled else step), torch.rand(100, 784), lambda out: None


def jax_step():
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    params = []
    for a, b in SIZES:
        key, k = jax.random.split(key)
        params.append((jax.random.normal(k, (a, b)) * 0.03, jnp.zeros(b)))

    def mlp(h, layers):
        for j, (w, b) in enumerate(layers):
            h = h @ w + b
            h = jax.nn.relu(h) if j < len(layers) - 1 else h
        return h

    def loss(p, x):
        e = mlp(x, p[:3])
        d = mlp(e[:, :50], p[3:])
        return jnp.sum(d * d) + jnp.sum(e * e)

    step = jax.jit(jax.value_and_grad(loss))
    x = jax.random.uniform(key, (100, 784))
    return (lambda xb: step(params, xb)), x, jax.block_until_ready


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", choices=("torch-eager", "torch-compiled", "jax"),
                    required=True)
    ap.add_argument("--profile", action="store_true", help="torch: time per product call")
    ap.add_argument("--steps", type=int, default=200, help="steps per round (default 200)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    args = ap.parse_args(argv)
    if args.library == "jax":
        step, x, wait = jax_step()
    else:
        step, x, wait = torch_step(args.library == "torch-compiled")
    for _ in range(3):
        wait(step(x))
    times = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        for _ in range(args.steps):
            out = step(x)
        wait(out)
        times.append((time.perf_counter() - t) / args.steps * 1e3)
    m = statistics.median(times)
    print(f"{args.library}: {m:.2f} ms/step ({min(times):.2f}-{max(times):.2f}), "
          f"{FLOPS / m / 1e6:.0f} GFLOP/s")
    if args.profile and args.library != "jax":
        from torch.profiler import profile

        with profile() as prof:
            for _ in range(50):
                step(x)
        for e in prof.key_averages():
            if e.key in ("aten::mm", "aten::addmm"):
                print(f"  {e.key}: {e.count} calls, {e.self_cpu_time_total / e.count:.0f} us each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
