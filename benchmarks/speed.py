"""ppl_vae against hand-written PyTorch: training, gradient estimators, log p(x), start-up, FLOP/s.

One entry point for every speed target. Each ppl_vae figure is a ratio to a hand-written
reference of our own *measured in the same run*, interleaved (A, B, A, B, ...), reported as the
median with its min-max. Architecture everywhere: encoder 784-500-500-2x50, decoder 50-500-500-784,
ReLU, Bernoulli likelihood, batch 100, Adam lr 1e-3 (the references use torch's default Adam),
statically binarized MNIST.

* ``train-trace``, ``train-meanfield``: whole processes, ``ppl-vae train ... --epochs E`` against
  ``python benchmarks/references.py --objective OBJ`` (a plain torch VAE with the same epochs, the
  same per-epoch validation ELBO, the same data); also the per-epoch seconds each reports.
* ``iwae-10``, ``dreg-10`` against a hand-written batched IWAE step; ``score-avg``, ``tracegraph``
  against a hand-written REINFORCE step with the same decaying-average baseline (per step,
  in-process).
* ``discrete`` (issue 19): the discrete-latent objectives ``score-loo-2``, ``vimco-2``, ``arm``,
  ``disarm``, ``rebar``, ``relax`` on the linear sigmoid belief network of the DisARM protocol
  (784-200-784, batch 50, Adam lr 1e-4), each against a hand-written torch implementation of
  the same estimator (``benchmarks/sbn_references.py``; the same gradients on the same draws,
  ``tests/benchmarks/test_sbn_references.py``), per step, in-process.
* ``is``, ``naive``: data points per second of ``importance_sampling`` / ``naive_monte_carlo``
  with default options and a seed (what ``ppl-vae evaluate`` runs) against a hand-written
  batched evaluator; peak RSS of ``ppl-vae evaluate -k 5000`` in a subprocess.
* ``fresh``: ``ppl-vae evaluate --estimator is`` / ``naive`` as a fresh process against the
  hand-written evaluator as a fresh process (``python benchmarks/references.py evaluate``), on
  the run's checkpoint weights, the same test points and K, interleaved, for N x K in
  ``FRESH_GRID`` (``--grid``; ``--quick``: N = 200, K = 200 and 1000): the whole process (wall)
  and the ``seconds`` each prints (the estimate alone). ``--run`` names the trained run
  (default: the train section's, else one trained for an epoch); ``--ref-malloc`` also times
  the reference under the allocator settings that ``evaluate`` makes for itself.
* ``startup``: ``import ppl_vae``, ``ppl-vae --help`` and ``import torch``, whole processes.
* ``flops``: achieved GFLOP/s of a training step and of IS evaluation against a 2048^3 matmul.

The references are in ``benchmarks/references.py`` and ``benchmarks/sbn_references.py``; the
timing (interleaving, ratio rows) in ``benchmarks/_common.py``.

Usage: ``python benchmarks/speed.py [--quick] [--threads N] [--only a,b] [--out DIR]``
(``--only`` from startup, train, objectives, discrete, marginal, rss, fresh, flops; fresh is
not in the default, run it with ``--only fresh [--run RUN] [--grid 200x200,...]``);
``--quick`` (a 5000-point subset, fewer repeats) finishes in under two minutes. Writes
``speed.json`` and ``speed.csv`` to ``--out`` (default ``$TMPDIR/ppl_vae_benchmarks/speed``),
nothing else.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import references
import sbn_references
import torch
from _common import (
    default_out,
    interleave,
    mnist_path,
    npz_subset,
    parser,
    ratio_row,
    run_process,
    set_threads,
    spread,
    timed,
)
from references import Reinforce, TorchVAE, iwae_step


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "ppl_vae.commands.cli", *map(str, args)]


# ------------------------------------------------------------------------------------------
# the measurements
# ------------------------------------------------------------------------------------------
def bench_train(objective, data, epochs, repeats, env, tmp) -> list[dict]:
    ours_cmd = cli("train", "--data", data, "--latent-dim", 50, "--hidden", "500,500",
                   "--batch-size", 100, "--epochs", epochs, "--objective", objective,
                   "--no-progress", "--json", "--out", tmp / f"run-{objective}")
    ref_cmd = [sys.executable, references.__file__, "--objective", objective, "--data",
               str(data), "--epochs", str(epochs)]
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
                                 ("score-avg", "reinforce", 1.2),
                                 ("tracegraph", "reinforce", 1.2)):
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


DISCRETE = (("score-loo-2", sbn_references.score_loo_grads, (2,)),
            ("vimco-2", sbn_references.vimco_grads, (2,)),
            ("arm", sbn_references.arm_grads, ()),
            ("disarm", sbn_references.disarm_grads, ()),
            ("rebar", sbn_references.rebar_grads, ()),
            ("relax", sbn_references.relax_grads, None))


def bench_discrete_steps(x, repeats, steps, only=None) -> list[dict]:
    """Each discrete-latent objective's SVI step against the hand-written estimator's step on
    the linear SBN (same initial weights, the same minibatches; Adam lr 1e-4)."""
    import ppl_vae
    from ppl_vae.guides import BernoulliGuide
    from ppl_vae.models import SigmoidBeliefNetwork

    n = x.shape[0]
    gen = torch.Generator().manual_seed(0)
    batches = [x[torch.randperm(n, generator=gen)[:50]] for _ in range(steps)]
    def make_svi(name, compile=False):
        torch.manual_seed(0)
        model, guide = SigmoidBeliefNetwork(784, 200), BernoulliGuide(784, 200)
        objective = ppl_vae.make_objective(name, x_dim=784)
        return ppl_vae.SVI(model, guide, objective, lr=1e-4, compile=compile)

    rows = []
    for name, grads_fn, args in DISCRETE:
        if only and name not in only:
            continue
        svi = make_svi(name)
        compiled = make_svi(name, compile=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a refusal is reported in the row instead
            for xb in batches[:3]:  # the capture and the Inductor compile: not timed
                compiled.step(xb, num_data=n)
        sbn = sbn_references.TorchSBN(784, 200).load_pair(svi.model, svi.guide)
        params = list(sbn.parameters())
        if args is None:
            relax = sbn_references.Relax(784, 200)
            params += list(relax.parameters())
            args = (relax,)
        opt = torch.optim.Adam(params, lr=1e-4)

        def ours():
            for xb in batches:
                svi.step(xb, num_data=n)

        def ref():
            for xb in batches:
                sbn_references.step(grads_fn, sbn, opt, xb, n / xb.shape[0], *args)

        def ours_compiled():
            for xb in batches:
                compiled.step(xb, num_data=n)

        runners = {"ours": ours, "ref": ref}
        if compiled.compile:
            runners["compiled"] = ours_compiled
        times = interleave(runners, repeats)
        rows.append(ratio_row(f"{name} step vs hand-written {name} (linear SBN 784-200, "
                              "batch 50)", times, "ours", "ref", per=steps, goal=1.3))
        if compiled.compile:
            rows.append(ratio_row(f"{name} compiled step (SVI(compile=True)) vs hand-written "
                                  f"eager {name}", times, "compiled", "ref", per=steps, goal=1.3))
        else:
            rows.append({"target": f"{name} compiled step: not compiled "
                                   f"({compiled.compile_notice})", "ratio": float("nan")})
    return rows


def bench_marginal(x, k, repeats) -> list[dict]:
    from ppl_vae.marginal import importance_sampling, naive_monte_carlo

    model, guide = _pair()
    model.eval(), guide.eval()
    vae = TorchVAE().load_pair(model, guide)
    rows = []
    for name, ours_fn, prior, goal in (
            ("is", lambda: importance_sampling(model, guide, x, k, seed=0), False, 0.95),
            ("naive", lambda: naive_monte_carlo(model, x, k, seed=0), True, 0.95)):
        ref_fn = lambda p=prior: references.log_px(vae, x, k, p)  # noqa: E731
        times = interleave({"ours": ours_fn, "ref": ref_fn}, repeats)
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
        "ref": lambda: references.ais(vae, xa, 16, steps, 10)}, repeats)
    rows.append(ratio_row(f"ais 16 chains x {steps} steps x 10 leapfrog, 64 points/s", times,
                          "ours", "ref", higher_is_better=True, goal=0.9))
    return rows


#: (N, K) of the fresh-process comparison; --quick runs the first two
FRESH_GRID = ((200, 200), (200, 1000), (200, 5000), (10000, 200), (10000, 1000), (10000, 5000))


def fresh_inputs(run_dir: Path, tmp: Path) -> tuple[Path, Path, Path]:
    """``(run copy, TorchVAE weights, .npz)`` for the fresh-process comparison: a copy of the
    run (``evaluate`` appends to its evaluation.csv: nothing is written into ``run_dir``), the
    checkpoint's weights as a :class:`references.TorchVAE` state dict, and the run's data."""
    import shutil

    from ppl_vae.training.runs import load_run

    copy = tmp / "fresh-run"
    if not copy.exists():
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.csv", "*.png"))
    r = load_run(copy)
    weights = tmp / "fresh-vae.pt"
    torch.save(TorchVAE(r.model.x_dim).load_pair(r.model, r.guide).state_dict(), weights)
    data = Path(r.config.data) if r.config.data != "binarized-mnist" else mnist_path()
    return copy, weights, data


def bench_fresh(run_dir: Path, grid, estimators, repeats, env, tmp, ref_malloc=False,
                other_products=False):
    """``ppl-vae evaluate --estimator E -k K --limit N`` as a fresh process against the
    hand-written evaluator ``references.py evaluate`` as a fresh process, on the same weights,
    data and K, interleaved: both the whole process (wall) and the ``seconds`` each prints (the
    estimate alone), as our speed relative to the reference's (higher is better). With
    ``ref_malloc`` also the reference under the allocator settings that evaluate makes itself
    (``ppl_vae.io.memory.keep_freed_memory``). Where the default compiles the log
    weights (N x K at least ``COMPILE_MIN_ROWS``), also ours with ``--no-compile``; the first
    compiled process of a machine compiles cold, later ones find Inductor's on-disk cache.
    With ``other_products`` (and a compiled default) also ours with the other setting of
    ``PPL_VAE_ONEDNN`` (:data:`ppl_vae.infer.compiled.ONEDNN_PRODUCTS`)."""
    from ppl_vae.infer.compiled import ONEDNN_PRODUCTS
    from ppl_vae.io.memory import MMAP_THRESHOLD, TRIM_THRESHOLD
    from ppl_vae.marginal.common import wants_compile

    run, weights, data = fresh_inputs(run_dir, tmp)
    malloc_env = {**env, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
                  "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
    other = f"PPL_VAE_ONEDNN={0 if ONEDNN_PRODUCTS else 1}"
    other_env = {**env, "PPL_VAE_ONEDNN": other[-1]}
    rows = []
    for n, k in grid:
        for est in estimators:
            first = len(rows)
            ours_cmd = cli("evaluate", "--run", run, "--estimator", est, "-k", k, "--limit", n,
                           "--json", "--no-progress")
            ref_cmd = [sys.executable, references.__file__, "evaluate", "--weights", weights,
                       "--data", data, "-k", k, "--limit", n, *(["--prior"] if est == "naive"
                                                               else [])]
            ref_cmd = list(map(str, ref_cmd))
            inner, rss = defaultdict(list), defaultdict(list)

            def runner(name, cmd, e):
                def go():
                    _, out = run_process(cmd, e)
                    res = json.loads(out.strip().splitlines()[-1])
                    inner[name].append(res["seconds"])
                    rss[name].append(res.get("peak_rss_mb"))
                return go

            runners = {"ours": runner("ours", ours_cmd, env), "ref": runner("ref", ref_cmd, env)}
            if wants_compile("auto", n * k):  # the default compiles: also time it without
                runners["ours --no-compile"] = runner("ours --no-compile",
                                                      ours_cmd + ["--no-compile"], env)
                if other_products:
                    runners[f"ours {other}"] = runner(f"ours {other}", ours_cmd, other_env)
            if ref_malloc:
                runners["ref+malloc"] = runner("ref+malloc", ref_cmd, malloc_env)
            wall = interleave(runners, repeats, warmup=False)
            what = f"fresh process, evaluate --estimator {est} N={n} K={k}"
            for refname in [r for r in runners if r != "ours"]:
                tag = {"ref": "", "ours --no-compile": " (against ours with --no-compile)",
                       f"ours {other}": f" (against ours with {other})"}.get(
                    refname, " (reference with evaluate's malloc settings)")
                for kind, times in (("wall", wall), ("JSON seconds", inner)):
                    row = ratio_row(f"{what}: {kind}{tag}", {"ours": times["ours"],
                                                             "ref": times[refname]},
                                    "ours", "ref", higher_is_better=True,
                                    goal=1.0 if refname == "ref" else None)
                    row.update(estimator=est, n=n, k=k, measure=kind,
                               ours_peak_rss_mb=max(rss["ours"]),
                               ref_peak_rss_mb=max(rss[refname]))
                    rows.append(row)
            for row in rows[first:]:
                print(f"{row['target']}: {row['ratio']:.3f} ({row['ratio_min']:.3f}-"
                      f"{row['ratio_max']:.3f}); {row['ours_median_s']:.2f} s vs "
                      f"{row['ref_median_s']:.2f} s", flush=True)
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
    return [{"target": name, **spread(v), "goal": goals.get(name),
             **({"met": float(np.median(v)) < goals[name]} if name in goals else {})}
            for name, v in times.items()]


def bench_flops(x, k) -> list[dict]:
    import ppl_vae
    from ppl_vae.marginal import importance_sampling

    a = torch.randn(2048, 2048)
    t = min(timed(lambda: a @ a) for _ in range(5))
    peak = 2 * 2048**3 / t / 1e9
    macs = 784 * 500 + 500 * 500 + 500 * 100 + 50 * 500 + 500 * 500 + 500 * 784  # per point
    model, guide = _pair()
    svi = ppl_vae.SVI(model, guide, "trace")
    xb = x[:100]
    svi.step(xb, num_data=len(x))
    step = statistics.median(timed(lambda: svi.step(xb, num_data=len(x))) for _ in range(20))
    train_gflops = 3 * 2 * macs * 100 / step / 1e9  # forward + 2x backward
    model.eval(), guide.eval()
    xs = x[:120]  # whole blocks of the seeded path at K=200 (no padding)
    dec = 50 * 500 + 500 * 500 + 500 * 784
    flop = 2 * (len(xs) * k * dec + len(xs) * (macs - dec))
    is_gflops = flop / timed(lambda: importance_sampling(model, guide, xs, k, seed=0)) / 1e9
    from ppl_vae.io.memory import keep_freed_memory

    keep_freed_memory()  # what `ppl-vae evaluate` runs under (process-wide: the last rows)
    importance_sampling(model, guide, xs[:8], k, seed=0)
    tuned = flop / min(timed(lambda: importance_sampling(model, guide, xs, k, seed=0))
                       for _ in range(2)) / 1e9
    # the compiled paths: SVI(compile=True) after its capture; IS with compile=True on whole
    # blocks, each call capturing again (a warm Inductor cache after the first: min of 2 calls)
    model.train(), guide.train()
    compiled = ppl_vae.SVI(model, guide, "trace", compile=True)
    for _ in range(3):
        compiled.step(xb, num_data=len(x))
    step_c = statistics.median(timed(lambda: compiled.step(xb, num_data=len(x)))
                               for _ in range(20))
    model.eval(), guide.eval()
    xc = x[:1024]
    flop_c = 2 * (len(xc) * k * dec + len(xc) * (macs - dec))
    is_c = flop_c / min(timed(lambda: importance_sampling(model, guide, xc, k, seed=0,
                                                          compile=True)) for _ in range(2)) / 1e9
    train_c = 3 * 2 * macs * 100 / step_c / 1e9
    return [{"target": "GFLOP/s, 2048^3 matmul", "gflops": peak},
            {"target": "GFLOP/s, training step (trace, batch 100)", "gflops": train_gflops,
             "fraction_of_matmul": train_gflops / peak},
            {"target": "GFLOP/s, compiled training step (trace, batch 100)", "gflops": train_c,
             "fraction_of_matmul": train_c / peak},
            {"target": f"GFLOP/s, IS evaluation compiled (K={k}, 1024 points, capture "
                       "included)", "gflops": is_c, "fraction_of_matmul": is_c / peak},
            {"target": f"GFLOP/s, IS evaluation (K={k})", "gflops": is_gflops,
             "fraction_of_matmul": is_gflops / peak},
            {"target": f"GFLOP/s, IS evaluation (K={k}), evaluate's malloc settings",
             "gflops": tuned, "fraction_of_matmul": tuned / peak}]


# ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = parser(__doc__, out=default_out("speed"), threads=True,
                smoke="small budget: under two minutes")
    ap.add_argument("--only", default="startup,train,objectives,discrete,marginal,rss,flops")
    ap.add_argument("--run", type=Path, default=None,
                    help="fresh: a trained run of the architecture (default: the run the train "
                         "section trained, else one trained for 1 epoch here)")
    ap.add_argument("--grid", default=None,
                    help="fresh: NxK pairs, e.g. 200x200,10000x1000 (default: all of "
                         "FRESH_GRID; --quick: 200x200,200x1000)")
    ap.add_argument("--estimators", default="is,naive", help="fresh: estimators")
    ap.add_argument("--ref-malloc", action="store_true",
                    help="fresh: also time the reference with evaluate's malloc settings")
    ap.add_argument("--other-products", action="store_true",
                    help="fresh: also time ours with the other setting of PPL_VAE_ONEDNN")
    ap.add_argument("--discrete", default=None,
                    help="with --only discrete: a comma-separated subset of "
                         + ",".join(d[0] for d in DISCRETE))
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 3)")
    args = ap.parse_args(argv)
    args.quick = args.smoke
    mnist = mnist_path()
    env = dict(os.environ)
    set_threads(args.threads, env)  # in every process
    only = set(args.only.split(","))
    repeats = args.repeats or (2 if args.quick else 3)
    epochs = args.epochs or (2 if args.quick else 3)
    k = 200 if args.quick else 1000
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        data = npz_subset(mnist, 3000, tmp) if args.quick else mnist
        x = torch.as_tensor(np.load(data)["train"], dtype=torch.float32)
        xt = torch.as_tensor(np.load(mnist)["test"][: 120 if args.quick else 1000],
                             dtype=torch.float32)
        if "startup" in only:
            rows += bench_startup(env, repeats)
        if "train" in only:
            for objective in ("trace", "meanfield"):
                rows += bench_train(objective, data, epochs, repeats, env, tmp)
        if "objectives" in only:
            rows += bench_objective_steps(x, repeats, 5 if args.quick else 50)
        if "discrete" in only:
            rows += bench_discrete_steps(x, max(repeats, 5), 20 if args.quick else 50,
                                         args.discrete and args.discrete.split(","))
        if "marginal" in only:
            rows += bench_marginal(xt, k, repeats)
        if "rss" in only and (tmp / "run-trace").is_dir():
            rows.append(bench_rss(tmp / "run-trace", 5000, 20 if args.quick else 200, env))
        if "fresh" in only:
            run_dir = args.run or tmp / "run-trace"
            if not run_dir.is_dir():
                run_process(cli("train", "--data", data, "--latent-dim", 50, "--hidden",
                                "500,500", "--likelihood", "bernoulli", "--objective", "trace",
                                "--epochs", 1, "--no-progress", "--out", run_dir), env)
            grid = FRESH_GRID[:2] if args.quick else FRESH_GRID
            if args.grid:
                grid = [tuple(int(v) for v in g.split("x")) for g in args.grid.split(",")]
            rows += bench_fresh(run_dir, grid, args.estimators.split(","), repeats, env, tmp,
                                args.ref_malloc, args.other_products)
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
