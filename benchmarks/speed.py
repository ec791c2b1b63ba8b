"""ppl_vae against hand-written PyTorch: training, gradient estimators, log p(x), start-up, FLOP/s.

One entry point for every speed target. Each ppl_vae figure is a ratio to a hand-written
reference of our own *measured in the same run*, interleaved (A, B, A, B, ...), reported as the
median with its min-max. Architecture everywhere: encoder 784-500-500-2x50, decoder 50-500-500-784,
ReLU, Bernoulli likelihood, batch 100, Adam lr 1e-3 (the references use torch's default Adam),
statically binarized MNIST.

* ``train-trace``, ``train-meanfield``: whole processes, ``ppl-vae train ... --epochs E`` against
  ``python benchmarks/speed.py --reference-train OBJ`` (a plain torch VAE with the same epochs, the
  same per-epoch validation ELBO, the same data); also the per-epoch seconds each reports.
* ``iwae-10``, ``dreg-10`` against a hand-written batched IWAE step; ``score-avg``, ``tracegraph``
  against a hand-written REINFORCE step with the same decaying-average baseline (per step,
  in-process).
* ``is``, ``naive``: data points per second of ``importance_sampling`` / ``naive_monte_carlo``
  with default options and a seed (what ``ppl-vae evaluate`` runs) against a hand-written
  batched evaluator; peak RSS of ``ppl-vae evaluate -k 5000`` in a subprocess.
* ``startup``: ``import ppl_vae``, ``ppl-vae --help`` and ``import torch``, whole processes.
* ``flops``: achieved GFLOP/s of a training step and of IS evaluation against a 2048^3 matmul.

Usage: ``python benchmarks/speed.py [--quick] [--threads N] [--only a,b] [--out DIR]``;
``--quick`` (a 5000-point subset, fewer repeats) finishes in under two minutes. Writes
``speed.json`` and ``speed.csv`` to ``--out`` (default ``benchmarks/results/speed``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
MNIST = Path(os.environ.get("PPL_VAE_BINARIZED_MNIST",
                            ROOT.parent / "shared" / "data" / "binarized_mnist.npz"))
LOG2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------------------------------
# hand-written references
# ------------------------------------------------------------------------------------------
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

    def elbo(self, x, analytic_kl=False):
        loc, scale = self.encode(x)
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        if analytic_kl:
            kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1 - 2 * scale.log()).sum(-1)
            return self.log_px(x, z) - kl
        log_pz = (-0.5 * z.pow(2) - 0.5 * LOG2PI).sum(-1)
        log_qz = (-0.5 * eps.pow(2) - scale.log() - 0.5 * LOG2PI).sum(-1)
        return self.log_px(x, z) + log_pz - log_qz

    def log_weights(self, x, k, prior=False):
        """(k, B) log weights of IS with the encoder (or naive MC with the prior)."""
        loc, scale = self.encode(x)
        eps = torch.randn((k,) + loc.shape)
        z = eps if prior else loc + scale * eps
        if prior:
            return self.log_px(x, z)
        log_pz = (-0.5 * z.pow(2) - 0.5 * LOG2PI).sum(-1)
        log_qz = (-0.5 * eps.pow(2) - scale.log() - 0.5 * LOG2PI).sum(-1)
        return self.log_px(x, z) + log_pz - log_qz


def reference_train(data: Path, objective: str, epochs: int, seed: int = 0) -> None:
    """The hand-written training script that ``ppl-vae train`` is timed against."""
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
            loss = -vae.elbo(x[idx], objective == "meanfield").sum() * (n / len(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            valid = sum(float(vae.elbo(xv[i:i + 1000]).sum()) for i in range(0, len(xv), 1000))
        print(json.dumps({"epoch": epoch + 1, "seconds": time.perf_counter() - t0,
                          "valid_elbo": valid / len(xv)}), flush=True)


def iwae_step(vae, opt, x, k, n):
    log_w = vae.log_weights(x, k)
    loss = -(torch.logsumexp(log_w, 0) - math.log(k)).sum() * (n / x.shape[0])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class Reinforce:
    """Score-function step for the encoder with a decaying-average baseline per batch position
    (Pyro's ``use_decaying_avg_baseline``), pathwise-free: z is drawn without a gradient."""

    def __init__(self, beta=0.9):
        self.beta, self.avg = beta, None

    def step(self, vae, opt, x, n):
        loc, scale = vae.encode(x)
        z = (loc + scale * torch.randn_like(loc)).detach()
        log_q = (-0.5 * ((z - loc) / scale).pow(2) - scale.log() - 0.5 * LOG2PI).sum(-1)
        log_p = vae.log_px(x, z) + (-0.5 * z.pow(2) - 0.5 * LOG2PI).sum(-1)
        cost = (log_p - log_q).detach() * (n / x.shape[0])
        self.avg = cost if self.avg is None else self.beta * self.avg + (1 - self.beta) * cost
        surrogate = (log_p - log_q) * (n / x.shape[0]) + (cost - self.avg) * log_q
        opt.zero_grad(set_to_none=True)
        (-surrogate.sum()).backward()
        opt.step()


def hand_ais(vae, x, chains, steps, leapfrog, eps0=0.05, target=0.65):
    """HMC-AIS from the encoder to the posterior along the geometric path with the sigmoid
    schedule and per-point step-size adaptation — the same algorithm as
    ``ppl_vae.marginal.annealed_importance_sampling``, written for this VAE alone."""
    s = torch.sigmoid(torch.linspace(-4.0, 4.0, steps + 1, dtype=torch.float64))
    betas = ((s - s[0]) / (s[-1] - s[0])).tolist()
    with torch.no_grad():
        loc, scale = vae.encode(x)
    xe = x.expand(chains, *x.shape)

    def parts(z):
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            log_q = (-0.5 * ((z - loc) / scale).pow(2) - scale.log() - 0.5 * LOG2PI).sum(-1)
            log_p = vae.log_px(xe, z) + (-0.5 * z.pow(2) - 0.5 * LOG2PI).sum(-1)
            gq = torch.autograd.grad(log_q.sum(), z, retain_graph=True)[0]
            gp = torch.autograd.grad(log_p.sum(), z)[0]
        return log_q.detach(), log_p.detach(), gq, gp

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


# ------------------------------------------------------------------------------------------
# measurement helpers
# ------------------------------------------------------------------------------------------
def interleave(runners: dict, repeats: int, warmup: bool = True) -> dict:
    """``{name: [seconds, ...]}``: each runner called once to warm up (in-process runs), then
    in turn."""
    for fn in runners.values() if warmup else ():
        fn()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio_row(target: str, times: dict, ours: str, ref: str, per: float = 1.0,
              higher_is_better: bool = False, goal: float | None = None) -> dict:
    """Median and min-max of ours/ref (or ref/ours for throughputs)."""
    a, b = np.array(times[ours]), np.array(times[ref])
    r = (b / a) if higher_is_better else (a / b)
    row = {"target": target, "ours_median_s": float(np.median(a)) / per,
           "ref_median_s": float(np.median(b)) / per, "ratio": float(np.median(r)),
           "ratio_min": float(r.min()), "ratio_max": float(r.max()), "repeats": len(a),
           "kind": "throughput ratio (higher is better)" if higher_is_better
           else "time ratio (lower is better)", "goal": goal}
    if goal is not None:
        row["met"] = bool(row["ratio"] >= goal if higher_is_better else row["ratio"] <= goal)
    return row


def binarized_subset(n_train: int, out_dir: Path) -> Path:
    """A smaller copy of the binarized-MNIST .npz (the quick mode), outside the repository."""
    arrays = np.load(MNIST)
    path = out_dir / f"bmnist_{n_train}.npz"
    np.savez(path, train=arrays["train"][:n_train], valid=arrays["valid"][:1000],
             test=arrays["test"][:1000])
    return path


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "ppl_vae.commands.cli", *map(str, args)]


def run_process(cmd, env) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------------------
# the measurements
# ------------------------------------------------------------------------------------------
def bench_train(objective, data, epochs, repeats, env, tmp) -> list[dict]:
    ours_cmd = cli("train", "--data", data, "--latent-dim", 50, "--hidden", "500,500",
                   "--batch-size", 100, "--epochs", epochs, "--objective", objective,
                   "--no-progress", "--json", "--out", tmp / f"run-{objective}")
    ref_cmd = [sys.executable, __file__, "--reference-train", objective, "--data", str(data),
               "--epochs", str(epochs)]
    epochs_ours, epochs_ref = [], []

    def ours():
        run_process(ours_cmd, env)
        metrics = np.genfromtxt(tmp / f"run-{objective}" / "metrics.csv", delimiter=",",
                                names=True)
        epochs_ours.extend(np.atleast_1d(metrics["seconds"]).tolist())

    def ref():
        _, out = run_process(ref_cmd, env)
        epochs_ref.extend(json.loads(line)["seconds"] for line in out.splitlines())

    times = interleave({"ours": ours, "ref": ref}, repeats, warmup=False)
    rows = [ratio_row(f"train-{objective} whole process ({epochs} epochs)", times, "ours", "ref",
                      goal=1.10)]
    # per epoch: epochs 2.. of each run (the first pays one-time costs in both programs, e.g.
    # the torch._dynamo import of torch.optim.Adam's first construction in ours)
    keep = [i for i in range(len(epochs_ours)) if i % epochs] or list(range(len(epochs_ours)))
    per_epoch = {"ours": [epochs_ours[i] for i in keep], "ref": [epochs_ref[i] for i in keep]}
    rows.append(ratio_row(f"train-{objective} per epoch", per_epoch, "ours", "ref", goal=1.05))
    return rows


def _pair():
    from ppl_vae.training.builders import build_model_and_guide
    from ppl_vae.training.config import TrainConfig

    return build_model_and_guide(TrainConfig(latent_dims=(50,), hidden=(500, 500)), 784)


def bench_objective_steps(x, repeats, steps) -> list[dict]:
    import ppl_vae

    n = x.shape[0]
    gen = torch.Generator().manual_seed(0)
    batches = [x[torch.randperm(n, generator=gen)[:100]] for _ in range(steps)]
    rows = []
    for name, ref_kind, goal in (("iwae-10", "iwae", 1.15), ("dreg-10", "iwae", 1.15),
                                 ("score-avg", "reinforce", 1.35),
                                 ("tracegraph", "reinforce", 1.35)):
        model, guide = _pair()
        svi = ppl_vae.SVI(model, guide, name, lr=1e-3)
        if name == "tracegraph":  # the score function on the same latent, as score-avg
            svi = ppl_vae.SVI(model, guide, ppl_vae.make_objective("score"), lr=1e-3)
        vae = TorchVAE()
        opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
        reinforce = Reinforce()

        def ours():
            for xb in batches:
                svi.step(xb, num_data=n)

        def ref():
            for xb in batches:
                if ref_kind == "iwae":
                    iwae_step(vae, opt, xb, 10, n)
                else:
                    reinforce.step(vae, opt, xb, n)

        times = interleave({"ours": ours, "ref": ref}, repeats)
        ref_name = "batched IWAE" if ref_kind == "iwae" else "REINFORCE + average baseline"
        label = f"{name} step vs hand-written {ref_name}"
        rows.append(ratio_row(label, times, "ours", "ref", per=steps, goal=goal))
    return rows


def bench_marginal(x, k, repeats) -> list[dict]:
    from ppl_vae.marginal import importance_sampling, naive_monte_carlo

    model, guide = _pair()
    model.eval(), guide.eval()
    vae = TorchVAE()
    vae.enc.load_state_dict({k_.replace("encoder.", ""): v for k_, v in
                             guide.state_dict().items()})
    vae.dec.load_state_dict({k_.replace("decoder.", ""): v for k_, v in
                             model.state_dict().items()})

    @torch.no_grad()
    def hand(prior):
        b = max(1, 10_000 // k)
        out = []
        for i in range(0, x.shape[0], b):
            lw = vae.log_weights(x[i:i + b], k, prior=prior)
            out.append(torch.logsumexp(lw.double(), 0) - math.log(k))
        return torch.cat(out)

    rows = []
    for name, ours_fn, prior, goal in (
            ("is", lambda: importance_sampling(model, guide, x, k, seed=0), False, 0.95),
            ("naive", lambda: naive_monte_carlo(model, x, k, seed=0), True, 0.95)):
        times = interleave({"ours": ours_fn, "ref": lambda p=prior: hand(p)}, repeats)
        rows.append(ratio_row(f"{name} K={k} points/s (default options, seeded)", times, "ours",
                              "ref", higher_is_better=True, goal=goal))
        rows[-1]["ours_points_per_s"] = x.shape[0] / rows[-1]["ours_median_s"]
        rows[-1]["ref_points_per_s"] = x.shape[0] / rows[-1]["ref_median_s"]
    from ppl_vae.marginal import annealed_importance_sampling

    # 64 points = one block of the seeded path at 16 chains (a block is padded to 64 points)
    xa, steps = x[:64], 5 if x.shape[0] < 1000 else 50
    times = interleave({
        "ours": lambda: annealed_importance_sampling(model, guide, xa, 16, steps, num_leapfrog=10,
                                                     seed=0),
        "ref": lambda: hand_ais(vae, xa, 16, steps, 10)}, repeats)
    rows.append(ratio_row(f"ais 16 chains x {steps} steps x 10 leapfrog, 64 points/s", times,
                          "ours", "ref", higher_is_better=True, goal=0.9))
    return rows


def bench_rss(run_dir: Path, k: int, limit: int, env) -> dict:
    cmd = ["/usr/bin/time", "-f", "%M", *cli("evaluate", "--run", run_dir, "--estimator", "is",
                                             "-k", k, "--limit", limit, "--json",
                                             "--no-progress")]
    proc = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    peak_mb = int(proc.stderr.strip().splitlines()[-1]) / 1024
    return {"target": f"evaluate IS K={k} peak RSS ({limit} points; memory does not grow "
                      "with the number of points)", "peak_rss_mb": peak_mb,
            "goal": 2048.0, "met": peak_mb <= 2048}


def bench_startup(env, repeats) -> list[dict]:
    times = interleave({
        "import ppl_vae": lambda: run_process([sys.executable, "-c", "import ppl_vae"], env),
        "ppl-vae --help": lambda: run_process(cli("--help"), env),
        "import torch": lambda: run_process([sys.executable, "-c", "import torch"], env),
        "import ppl_vae + SVI, train (torch, pyro)": lambda: run_process(
            [sys.executable, "-c", "import ppl_vae; ppl_vae.SVI; ppl_vae.train"], env),
    }, repeats)
    goals = {"import ppl_vae": 2.0, "ppl-vae --help": 1.0}
    return [{"target": name, "seconds": float(np.median(v)), "seconds_min": float(min(v)),
             "seconds_max": float(max(v)), "goal": goals.get(name),
             **({"met": float(np.median(v)) < goals[name]} if name in goals else {})}
            for name, v in times.items()]


def bench_flops(x, k) -> list[dict]:
    import ppl_vae
    from ppl_vae.marginal import importance_sampling

    a = torch.randn(2048, 2048)
    t = min(_timed(lambda: a @ a) for _ in range(5))
    peak = 2 * 2048**3 / t / 1e9
    macs = 784 * 500 + 500 * 500 + 500 * 100 + 50 * 500 + 500 * 500 + 500 * 784  # per point
    model, guide = _pair()
    svi = ppl_vae.SVI(model, guide, "trace")
    xb = x[:100]
    svi.step(xb, num_data=len(x))
    step = statistics.median(_timed(lambda: svi.step(xb, num_data=len(x))) for _ in range(20))
    train_gflops = 3 * 2 * macs * 100 / step / 1e9  # forward + 2x backward
    model.eval(), guide.eval()
    xs = x[:120]  # whole blocks of the seeded path at K=200 (no padding)
    is_time = _timed(lambda: importance_sampling(model, guide, xs, k, seed=0))
    dec = 50 * 500 + 500 * 500 + 500 * 784
    is_gflops = 2 * (len(xs) * k * dec + len(xs) * (macs - dec)) / is_time / 1e9
    return [{"target": "GFLOP/s, 2048^3 matmul", "gflops": peak},
            {"target": "GFLOP/s, training step (trace, batch 100)", "gflops": train_gflops,
             "fraction_of_matmul": train_gflops / peak},
            {"target": f"GFLOP/s, IS evaluation (K={k})", "gflops": is_gflops,
             "fraction_of_matmul": is_gflops / peak}]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small budget: under two minutes")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads in every process (default: torch's own default)")
    ap.add_argument("--only", default="startup,train,objectives,marginal,rss,flops")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed")
    ap.add_argument("--reference-train", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 3)")
    args = ap.parse_args(argv)
    if args.reference_train:
        reference_train(Path(args.data), args.reference_train, args.epochs)
        return 0
    if not MNIST.is_file():
        raise SystemExit(f"binarized MNIST not found at {MNIST} (set PPL_VAE_BINARIZED_MNIST)")
    env = dict(os.environ)
    if args.threads:
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    only = set(args.only.split(","))
    repeats = args.repeats or (2 if args.quick else 3)
    epochs = args.epochs or (2 if args.quick else 3)
    k = 200 if args.quick else 1000
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        data = binarized_subset(3000, tmp) if args.quick else MNIST
        x = torch.as_tensor(np.load(data)["train"], dtype=torch.float32)
        xt = torch.as_tensor(np.load(MNIST)["test"][: 120 if args.quick else 1000],
                             dtype=torch.float32)
        if "startup" in only:
            rows += bench_startup(env, repeats)
        if "train" in only:
            for objective in ("trace", "meanfield"):
                rows += bench_train(objective, data, epochs, repeats, env, tmp)
        if "objectives" in only:
            rows += bench_objective_steps(x, repeats, 5 if args.quick else 50)
        if "marginal" in only:
            rows += bench_marginal(xt, k, repeats)
        if "rss" in only and (tmp / "run-trace").is_dir():
            rows.append(bench_rss(tmp / "run-trace", 5000, 20 if args.quick else 200, env))
        if "flops" in only:
            rows += bench_flops(x, k)
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "quick": args.quick, "k": k, "epochs": epochs,
            "max_rss_mb_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (args.out / "speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "speed.csv", index=False)
    print(json.dumps(meta))
    for row in rows:
        figures = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                   if k not in ("target", "kind") and v is not None}
        print(f"{row['target']}: {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
