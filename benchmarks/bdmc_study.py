"""How wrong is my estimate? The BDMC sandwich of log p(x) beside IS(K), AIS, naive MC and the
ELBO, on data simulated from a trained binarized-MNIST VAE.

Protocol of Grosse, Ghahramani & Adams (2015, "Sandwiching the marginal likelihood using
bidirectional Monte Carlo") as used by Wu, Burda, Salakhutdinov & Grosse (ICLR 2017, "On the
quantitative analysis of decoder-based generative models"), scaled down to a CPU:

1. train a VAE on binarized MNIST (``ppl_vae.train``; or take ``--run DIR``);
2. simulate ``--points`` pairs (z*, x) ~ p(z) p(x|z) from it (``ppl_vae.marginal.bdmc.simulate``):
   z* is an exact posterior sample for x;
3. on those x: bidirectional Monte Carlo (forward AIS from the guide: a stochastic *lower* bound
   on log p(x); reverse AIS started at z*: a stochastic *upper* bound) for every T in ``--ts``,
   with ``--chains`` chains and ``--leapfrog`` leapfrog steps per HMC transition; importance
   sampling with the guide, IS(K) (the IWAE bound L_K, a stochastic lower bound), for every K in
   ``--is-ks``; the ELBO (the mean of the largest-K run's log weights); naive Monte Carlo with
   the prior for every K in ``--naive-ks``. The truth is bracketed by the sandwich of the largest
   T: each estimate's error, estimate - log p(x), lies between mean(estimate - upper) and
   mean(estimate - lower);
4. whether IS's per-point ESS and Pareto k̂ predict which points IS gets wrong (Spearman
   correlations, error by k̂ bin).

Writes under ``--out`` only: ``bdmc_study.json`` (everything), ``summary.csv`` (one row per
estimate), ``points.csv`` (per point), ``bdmc.csv`` (the sandwich per T), ``prediction.csv``,
``bdmc_study.png``, ``bdmc_study.md`` (the generated table section) and ``command.txt``; every
estimate is cached in ``OUT/cache`` (keyed by checkpoint and settings), so a study can be run in
pieces (e.g. ``--ts 10,100`` first, then the full list) and re-tabulated for free. With
``--doc docs/marginal_likelihood.md`` the figure goes to ``docs/figures/bdmc_study.png`` and the
generated section replaces the one between the ``<!-- bdmc_study:begin/end -->`` markers of that
file (appended when absent).

    python benchmarks/bdmc_study.py --out /tmp/bdmc-study [--run DIR] \
        [--doc docs/marginal_likelihood.md]
    python benchmarks/bdmc_study.py --smoke --out /tmp/bdmc-smoke   # embedded digits, seconds

Default sizes (latent 10, hidden 200,200, 64 points, 16 chains, 10 leapfrog steps, T up to 3000)
took 20 minutes on a 2-core CPU (42 s training, 1103 s estimates, 698 s of them T = 3000).
AIS costs ~ chains x points x T x leapfrog gradients of the decoder (forward AIS runs points in
padded blocks of 64: use a multiple of 64).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import command_line, default_out, markdown_table, mnist_path, parser, set_threads

FULL = dict(latent_dim=10, hidden="200,200", epochs=20, batch_size=100, points=64, chains=16,
            leapfrog=10, ts="10,30,100,300,1000,3000",
            is_ks="1,2,5,10,20,50,100,200,500,1000,2000,5000",
            naive_ks="1,10,100,1000,10000,100000")
SMOKE = dict(latent_dim=2, hidden="16", epochs=1, batch_size=64, points=8, chains=4,
             leapfrog=2, ts="3,10", is_ks="1,5,50", naive_ks="10,100")
BEGIN, END = "<!-- bdmc_study:begin -->", "<!-- bdmc_study:end -->"
KHAT_BINS = (-math.inf, 0.5, 0.7, 1.0, math.inf)
BAD_ERROR = 1.0  # nats below the truth that count as "IS got this point wrong"
WU = dict(points=100, chains=16, leapfrog=10, temperatures=10_000)  # Wu et al.'s full setting


def _ints(text) -> list[int]:
    return [int(v) for v in str(text).split(",") if v.strip()]


def parse_args(argv=None):
    p = parser(__doc__, out=default_out("bdmc_study"), threads=True, seed=True,
               smoke="embedded digits, a 1-epoch 2-16 VAE, 8 points, 4 chains, T = 3, 10")
    p.add_argument("--run", type=Path, default=None,
                   help="a run of ppl-vae train to study (default: train one into OUT/run)")
    p.add_argument("--data", default=None,
                   help="training data (default: binarized MNIST, benchmarks/_common.mnist_path;"
                        " --smoke: the embedded digits)")
    for name, what in (("latent-dim", "latent dimension"), ("epochs", "training epochs"),
                       ("batch-size", "training minibatch"), ("points", "simulated points N"),
                       ("chains", "AIS chains per point and direction"),
                       ("leapfrog", "leapfrog steps per HMC transition")):
        key = name.replace("-", "_")
        p.add_argument(f"--{name}", type=int, default=None,
                       help=f"{what} (default {FULL[key]}; --smoke {SMOKE[key]})")
    for name, what in (("hidden", "hidden widths"), ("ts", "AIS temperatures T"),
                       ("is-ks", "IS sample sizes K"), ("naive-ks", "naive-MC sample sizes K")):
        key = name.replace("-", "_")
        p.add_argument(f"--{name}", default=None,
                       help=f"{what}, comma-separated (default {FULL[key]})")
    p.add_argument("--init", choices=("guide", "prior"), default="guide",
                   help="AIS initial distribution (default guide)")
    p.add_argument("--schedule", default="sigmoid", help="AIS schedule (default sigmoid)")
    p.add_argument("--step-size", type=float, default=0.01,
                   help="initial HMC step size (default 0.01, Wu et al.'s)")
    p.add_argument("--doc", type=Path, default=None,
                   help="a markdown file: the figure goes to its folder's figures/ and the "
                        "generated section between its bdmc_study markers (e.g. "
                        "docs/marginal_likelihood.md)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.hidden = tuple(_ints(args.hidden))
    args.ts, args.is_ks, args.naive_ks = (sorted(set(_ints(v))) for v in
                                          (args.ts, args.is_ks, args.naive_ks))
    if not args.ts or not args.is_ks:
        p.error("--ts and --is-ks need at least one value")
    return args


# ------------------------------------------------------------------------------------------
# stages
# ------------------------------------------------------------------------------------------
def device_description() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "CUDA available but not used" if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads, "
            f"{gpu}")


def train_run(args) -> tuple[Path, float | None, str]:
    """The run to study: ``--run``, or one trained into ``OUT/run`` (reused when there)."""
    cmd = ("ppl-vae train --data {data} --latent-dim {latent_dim} --hidden {hidden} "
           "--batch-size {batch_size} --epochs {epochs} --seed {seed}{compile} --out {out}")
    if args.run is not None:
        return args.run, None, f"(given: --run {args.run})"
    from ppl_vae import train

    run_dir = args.out / "run"
    data = args.data or ("digits" if args.smoke else str(mnist_path().resolve()))
    text = cmd.format(data=data, latent_dim=args.latent_dim,
                      hidden=",".join(map(str, args.hidden)), batch_size=args.batch_size,
                      epochs=args.epochs, seed=args.seed,
                      compile="" if args.smoke else " --compile", out=run_dir)
    stamp = args.out / "train.json"
    if (run_dir / "checkpoint.pt").is_file():
        seconds = json.loads(stamp.read_text())["seconds"] if stamp.is_file() else None
        print(f"reusing the run in {run_dir}", file=sys.stderr)
        return run_dir, seconds, text
    cfg = {"data": data, "latent_dims": (args.latent_dim,), "hidden": args.hidden,
           "batch_size": args.batch_size, "epochs": args.epochs, "seed": args.seed}
    t0 = time.perf_counter()
    train(cfg, out=run_dir, reports=False, progress=not args.no_progress,
          compile=not args.smoke)
    seconds = time.perf_counter() - t0
    stamp.write_text(json.dumps({"seconds": seconds, "command": text}))
    print(f"trained {run_dir} in {seconds:.1f} s", file=sys.stderr)
    return run_dir, seconds, text


def cached(out: Path, name: str, key: dict, fn) -> dict:
    """``fn()`` (a dict of tensors and numbers) computed once per ``key`` and kept in
    ``OUT/cache/NAME.pt``."""
    import torch

    path = out / "cache" / f"{name}.pt"
    if path.is_file():
        payload = torch.load(path, weights_only=False)
        if payload.get("key") == key:
            print(f"{name}: cached ({payload['seconds']:.1f} s when run)", file=sys.stderr)
            return payload
    payload = fn()
    payload["key"] = key
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    print(f"{name}: {payload['seconds']:.1f} s", file=sys.stderr, flush=True)
    return payload


def _is_payload(res) -> dict:
    return {"estimate": res.log_likelihood, "mc_stderr": res.stderr, "ess": res.ess,
            "pareto_k": res.pareto_k, "log_weight_mean": res.log_weight_mean,
            "log_weight_var": res.log_weight_var, "seconds": res.seconds}


def estimates(run, x, z, args) -> dict:
    """Every estimate on the simulated ``x``, by name: ``bdmc-T``, ``is-K``, ``naive-K``."""
    from ppl_vae.marginal import importance_sampling, naive_monte_carlo
    from ppl_vae.marginal.bdmc import bidirectional_monte_carlo

    model, guide = run.model, run.guide
    base = {"checkpoint_id": run.checkpoint_id, "points": args.points, "seed": args.seed}
    progress = not args.no_progress
    out = {}
    is_seed = args.seed + 1000  # streams independent of the AIS chains'

    for k in args.is_ks:
        out[f"is-{k}"] = cached(args.out, f"is-{k}", {**base, "k": k}, lambda: _is_payload(
            importance_sampling(model, guide, x, k, seed=is_seed, progress=progress)))
    for k in args.naive_ks:
        out[f"naive-{k}"] = cached(args.out, f"naive-{k}", {**base, "k": k}, lambda: _is_payload(
            naive_monte_carlo(model, x, k, seed=is_seed, progress=progress)))
    for t in args.ts:
        key = {**base, "t": t, "chains": args.chains, "leapfrog": args.leapfrog,
               "init": args.init, "schedule": args.schedule, "step_size": args.step_size}

        def bdmc(t=t):
            res = bidirectional_monte_carlo(
                model, guide, args.chains, t, x=x, z=z, init=args.init, schedule=args.schedule,
                num_leapfrog=args.leapfrog, step_size=args.step_size, seed=args.seed,
                progress=progress)
            lo, up = res.lower, res.upper
            return {"lower": lo.log_likelihood, "lower_mc_stderr": lo.stderr,
                    "upper": up.log_likelihood, "upper_mc_stderr": up.stderr,
                    "lower_seconds": lo.seconds, "upper_seconds": up.seconds,
                    "acceptance_rate": lo.info["acceptance_rate"],
                    "step_size_forward": lo.info["step_size"],
                    "step_size_reverse": up.info["step_size"],
                    "seconds": lo.seconds + up.seconds}
        out[f"bdmc-{t}"] = cached(args.out, f"bdmc-{t}", key, bdmc)
    return out


# ------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------
def _np(v) -> np.ndarray:
    return np.asarray(v.double() if hasattr(v, "double") else v, dtype=float)


def tables(est: dict, args) -> dict:
    best = max(args.ts)
    lo, up = _np(est[f"bdmc-{best}"]["lower"]), _np(est[f"bdmc-{best}"]["upper"])
    mid = (lo + up) / 2
    n = lo.size
    kmax = max(args.is_ks)

    def row(estimator, what, param, e, seconds, ess=None, khat=None, kind="K"):
        e = _np(e)
        return {"estimator": estimator, "what": what, "param": kind, "value": param,
                "mean": e.mean(), "se": e.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan,
                "error_lo": (e - up).mean(), "error_hi": (e - lo).mean(),
                "error_mid": (e - mid).mean(),
                "error_se": (e - mid).std(ddof=1) / math.sqrt(n) if n > 1 else math.nan,
                "ess_mean": math.nan if ess is None else _np(ess).mean(),
                "khat_over_0.7": math.nan if khat is None else int((_np(khat) > 0.7).sum()),
                "seconds": seconds}

    rows = [row("elbo", f"ELBO (mean of the {kmax} log weights of IS({kmax}))", kmax,
                est[f"is-{kmax}"]["log_weight_mean"], est[f"is-{kmax}"]["seconds"])]
    for k in args.is_ks:
        r = est[f"is-{k}"]
        rows.append(row("is", "IS with the guide, L_K (stochastic lower bound)", k,
                        r["estimate"], r["seconds"], r["ess"], r["pareto_k"]))
    for k in args.naive_ks:
        r = est[f"naive-{k}"]
        rows.append(row("naive", "naive MC with the prior (stochastic lower bound)", k,
                        r["estimate"], r["seconds"], r["ess"], r["pareto_k"]))
    for t in args.ts:
        r = est[f"bdmc-{t}"]
        rows.append(row("ais-forward", f"forward AIS from the {args.init} (stochastic lower "
                        "bound)", t, r["lower"], r["lower_seconds"], kind="T"))
        rows.append(row("ais-reverse", "reverse AIS from the exact z* (stochastic upper "
                        "bound)", t, r["upper"], r["upper_seconds"], kind="T"))
    summary = pd.DataFrame(rows)

    bdmc_rows = []
    for t in args.ts:
        r = est[f"bdmc-{t}"]
        gap = _np(r["upper"]) - _np(r["lower"])
        bdmc_rows.append({
            "T": t, "lower": _np(r["lower"]).mean(), "lower_se": _se(r["lower"]),
            "upper": _np(r["upper"]).mean(), "upper_se": _se(r["upper"]),
            "gap_mean": gap.mean(), "gap_median": float(np.median(gap)), "gap_max": gap.max(),
            "negative_gaps": int((gap < 0).sum()),
            "lower_mc_se": _np(r["lower_mc_stderr"]).mean(),
            "upper_mc_se": _np(r["upper_mc_stderr"]).mean(),
            "acceptance": _np(r["acceptance_rate"]).mean(),
            "forward_seconds": r["lower_seconds"], "reverse_seconds": r["upper_seconds"]})
    bdmc = pd.DataFrame(bdmc_rows)

    points = pd.DataFrame({"point": np.arange(n), "truth_lower": lo, "truth_upper": up})
    for name, r in est.items():
        if name.startswith("bdmc-"):
            points[f"{name}-lower"], points[f"{name}-upper"] = _np(r["lower"]), _np(r["upper"])
        else:
            points[name] = _np(r["estimate"])
            points[f"{name}-ess"], points[f"{name}-khat"] = _np(r["ess"]), _np(r["pareto_k"])
    points["elbo"] = _np(est[f"is-{kmax}"]["log_weight_mean"])

    pred_rows, bins = [], []
    for k in args.is_ks:
        r = est[f"is-{k}"]
        err = mid - _np(r["estimate"])  # nats below the truth (midpoint of the best sandwich)
        khat, ess, var = _np(r["pareto_k"]), _np(r["ess"]), _np(r["log_weight_var"])
        frame = pd.DataFrame({"err": err, "khat": khat, "ess": ess, "var": var})
        flagged, bad = khat > 0.7, err > BAD_ERROR
        pred_rows.append({
            "K": k, "error_mean": err.mean(), "error_max": err.max(),
            "spearman_khat": _spearman(frame, "khat") if k >= 21 else math.nan,
            "spearman_ess": _spearman(frame, "ess"),
            "spearman_log_weight_var": _spearman(frame, "var"),
            "flagged": int(flagged.sum()), "bad": int(bad.sum()),
            "bad_flagged": int((bad & flagged).sum())})
        if k >= 21 and k in {kmax, 100}:
            cut = pd.cut(frame.khat, KHAT_BINS, right=False)
            for interval, g in frame.groupby(cut, observed=True):
                bins.append({"K": k, "khat_bin": _interval(interval), "points": len(g),
                             "error_mean": g.err.mean(), "error_max": g.err.max(),
                             "ess_mean": g.ess.mean()})
    return {"summary": summary, "bdmc": bdmc, "points": points,
            "prediction": pd.DataFrame(pred_rows), "khat_bins": pd.DataFrame(bins),
            "best_t": best}


def _se(v) -> float:
    v = _np(v)
    return v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else math.nan


def _spearman(frame, col) -> float:
    ok = frame[["err", col]].replace([np.inf, -np.inf], np.nan).dropna()
    if len(ok) < 3 or ok[col].nunique() < 2 or ok.err.nunique() < 2:
        return math.nan
    return float(ok.err.rank().corr(ok[col].rank()))


def _interval(iv) -> str:
    lo = "" if math.isinf(iv.left) else f"{iv.left:g} ≤ "
    hi = "" if math.isinf(iv.right) else f" < {iv.right:g}"
    return f"{lo}k̂{hi}"


def projection(est: dict, args) -> dict:
    """The biggest BDMC's measured cost per gradient row and Wu et al.'s full setting
    projected from it (linear in rows and gradient evaluations)."""
    from ppl_vae.marginal.common import point_block

    t = max(args.ts)
    r = est[f"bdmc-{t}"]
    block = point_block(args.chains)
    fwd_rows = math.ceil(args.points / block) * block * args.chains  # padded blocks
    rev_rows = args.points * args.chains
    grads = (t - 1) * args.leapfrog + 1  # per direction: one at the start, L per transition
    us_fwd = 1e6 * r["lower_seconds"] / (fwd_rows * grads)
    us_rev = 1e6 * r["upper_seconds"] / (rev_rows * grads)
    wu_block = point_block(WU["chains"])
    wu_fwd_rows = math.ceil(WU["points"] / wu_block) * wu_block * WU["chains"]
    wu_rev_rows = WU["points"] * WU["chains"]
    wu_grads = (WU["temperatures"] - 1) * WU["leapfrog"] + 1
    wu_seconds = 1e-6 * (us_fwd * wu_fwd_rows + us_rev * wu_rev_rows) * wu_grads
    return {"T": t, "seconds": r["seconds"], "forward_seconds": r["lower_seconds"],
            "reverse_seconds": r["upper_seconds"], "gradient_evaluations": grads,
            "forward_rows": fwd_rows, "reverse_rows": rev_rows,
            "us_per_row_gradient_forward": us_fwd, "us_per_row_gradient_reverse": us_rev,
            "wu": {**WU, "forward_rows": wu_fwd_rows, "reverse_rows": wu_rev_rows,
                   "gradient_evaluations": wu_grads, "projected_seconds": wu_seconds}}


# ------------------------------------------------------------------------------------------
# figure and markdown
# ------------------------------------------------------------------------------------------
def plot(t: dict, args, path: Path, subtitle: str) -> Path:
    from ppl_vae.io.plots import plt, save_figure

    s, best = t["summary"], t["best_t"]
    b = t["bdmc"].set_index("T").loc[best]
    kmax = int(s[s.estimator == "is"].value.max())
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    sandwich = f"BDMC sandwich, T = {best}: [forward, reverse] AIS bounds"

    def band(ax):
        ax.axhspan(b.lower, b.upper, color="tab:green", alpha=0.3, lw=0, label=sandwich)
        ax.axhline(b.lower, color="tab:green", lw=0.8)
        ax.axhline(b.upper, color="tab:green", lw=0.8)

    def curve(ax, est, label, style, y=None):
        g = s[s.estimator == est]
        if len(g):
            ax.errorbar(g.value, g["mean"] if y is None else y(g), yerr=g.error_se, fmt=style,
                        ms=4, capsize=2, label=label)

    is_label = "IS(K) with the guide: IWAE bound L_K (stochastic lower bound)"
    naive_label = "naive MC(K) with the prior (stochastic lower bound)"
    elbo = s[s.estimator == "elbo"].iloc[0]
    ax = axes[0, 0]
    band(ax)
    curve(ax, "is", is_label, "o-")
    ax.axhline(elbo["mean"], color="tab:red", ls=":", label="ELBO (mean log weight, z ~ q)")
    ax.set_xscale("log")
    ax.set_xlabel("K (samples per point)")
    ax.set_ylabel(f"mean over the {args.points} simulated points [nats]")
    ax.set_title("(a) importance sampling: estimate of log p(x) vs K")
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[0, 1]
    mid = (b.lower + b.upper) / 2

    def below(g):
        return mid - g["mean"]

    curve(ax, "is", is_label, "o-", below)
    curve(ax, "naive", naive_label, "s--", below)
    ax.axhline(mid - elbo["mean"], color="tab:red", ls=":", label="ELBO (mean log weight, z ~ q)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("K (samples per point)")
    ax.set_ylabel(f"nats below the truth (midpoint of the T = {best} sandwich)")
    ax.set_title("(b) how wrong: nats below log p(x) vs K")
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    band(ax)
    fw = s[s.estimator == "ais-forward"]
    curve(ax, "ais-forward", f"forward AIS from the {args.init} (stochastic lower bound)", "o-")
    curve(ax, "ais-reverse", "reverse AIS from the exact z* (stochastic upper bound)", "v-")
    ax.axhline(float(s[(s.estimator == "is") & (s.value == kmax)]["mean"].iloc[0]),
               color="tab:orange", ls="--", label=f"IS(K = {kmax}) with the guide")
    ax.set_xscale("log")
    ax.set_xticks(list(fw.value), [str(int(v)) for v in fw.value])
    ax.set_xlabel(f"T (temperatures; {args.chains} chains, {args.leapfrog} leapfrog steps)")
    ax.set_ylabel(f"mean over the {args.points} simulated points [nats]")
    ax.set_title("(c) AIS: forward and reverse bounds on log p(x) vs T")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    pts = t["points"]
    err = (pts.truth_lower + pts.truth_upper) / 2 - pts[f"is-{kmax}"]
    sc = ax.scatter(pts[f"is-{kmax}-khat"], err, c=np.log10(pts[f"is-{kmax}-ess"]), s=14,
                    cmap="viridis")
    fig.colorbar(sc, ax=ax, label=f"log10 ESS of IS({kmax})")
    ax.axvline(0.7, color="k", ls=":", lw=0.8, label="k̂ = 0.7")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel(f"Pareto k̂ of IS({kmax}) (per point)")
    ax.set_ylabel(f"nats IS({kmax}) is below the truth\n(midpoint of the T = {best} sandwich)")
    ax.set_title("(d) per point: do k̂ and ESS flag the error of IS?")
    ax.legend(fontsize=7, loc="upper left")
    import textwrap

    fig.suptitle(textwrap.fill(subtitle, 180) + "\nerror bars: standard error over the points "
                 "of (estimate − midpoint of the best sandwich), paired", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _f(v, fmt=".2f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, fmt)


def markdown(t: dict, info: dict, figure: str) -> str:
    s, best = t["summary"], t["best_t"]
    lines = [BEGIN, "", f"Settings: {info['settings']}", "", f"Device: {info['device']}.", "",
             "| estimate | K or T | mean log p̂(x) ± se [nats] | estimate − log p(x) [nats] "
             f"(bracketed by the T = {best} sandwich; ± paired se) | ESS mean | # k̂ > 0.7 "
             "| seconds |",
             "|---|---|---|---|---|---|---|"]
    for _, r in s.iterrows():
        err = f"{r.error_lo:+.2f} … {r.error_hi:+.2f} (± {r.error_se:.2f})"
        lines.append(f"| {r.what} | {r.param} = {int(r.value)} | {r['mean']:.2f} ± {r.se:.2f} "
                     f"| {err} | {_f(r.ess_mean, '.1f')} | {_f(r['khat_over_0.7'], '.0f')} "
                     f"| {r.seconds:.1f} |")
    lines += ["", "The sandwich per T (means over the points; gap = reverse − forward per point):",
              "", markdown_table(t["bdmc"], fmt=_cell), ""]
    p = t["prediction"]
    lines += [f"Does IS's per-point diagnostic predict its error? error = nats below the midpoint"
              f" of the T = {best} sandwich; Spearman ρ over the points; flagged = k̂ > 0.7; "
              f"bad = error > {BAD_ERROR:g} nat:", "",
              markdown_table(p, fmt=_cell), ""]
    if len(t["khat_bins"]):
        lines += ["Error by k̂ bin:", "", markdown_table(t["khat_bins"], fmt=_cell), ""]
    pr = info["projection"]
    wu = pr["wu"]
    lines += [
        f"Wall times: training {_f(info['train_seconds'], '.0f')} s; the biggest BDMC (T = "
        f"{pr['T']}) {pr['forward_seconds']:.0f} s forward + {pr['reverse_seconds']:.0f} s "
        f"reverse = {pr['seconds']:.0f} s ({pr['gradient_evaluations']:,} gradient evaluations "
        f"per direction of {pr['forward_rows']} and {pr['reverse_rows']} rows: "
        f"{pr['us_per_row_gradient_forward']:.1f} and {pr['us_per_row_gradient_reverse']:.1f} "
        f"µs per row-gradient); all estimates {info['estimate_seconds']:.0f} s. Projected from "
        f"that cost, Wu et al.'s full setting ({wu['chains']} chains × {wu['leapfrog']} leapfrog"
        f" × {wu['temperatures']:,} temperatures on {wu['points']} simulated points, forward + "
        f"reverse; forward runs {wu['forward_rows']} padded rows) would take "
        f"{wu['projected_seconds']:.0f} s = {wu['projected_seconds'] / 3600:.1f} h on this "
        "device.", "",
        f"![BDMC sandwich beside IS, naive MC, ELBO and AIS]({figure})", "",
        "Commands:", "", "```", info["train_command"], info["command"], "```", "", END]
    return "\n".join(lines)


def _cell(v, column) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)) or column in ("T", "K", "points", "flagged", "bad",
                                                       "bad_flagged", "negative_gaps"):
        return _f(float(v), ".0f")
    if column.endswith("seconds"):
        return _f(float(v), ".1f")
    if column.startswith("spearman") or column == "acceptance":
        return _f(float(v), ".2f")
    return _f(float(v), ".3f")


def write_doc(doc: Path, section: str) -> None:
    text = doc.read_text() if doc.is_file() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def _json(v):
    if isinstance(v, pd.DataFrame):
        return v.replace({np.nan: None}).to_dict(orient="records")
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


# ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    set_threads(args.threads)
    import logging

    import torch

    from ppl_vae.io.provenance import declare
    from ppl_vae.marginal.bdmc import simulate
    from ppl_vae.training.runs import load_run

    logging.getLogger("pyro").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir, train_seconds, train_command = train_run(args)
    run = load_run(run_dir)
    declare(run.provenance())
    x, z = simulate(run.model, args.points, seed=args.seed)
    t0 = time.perf_counter()
    est = estimates(run, x, z, args)
    estimate_seconds = sum(float(r["seconds"]) for r in est.values())
    t = tables(est, args)
    cfg = run.config
    command = command_line("bdmc_study", argv if argv is not None else sys.argv[1:])
    info = {
        "settings": (f"VAE {cfg.latent_dims[0]}-{'-'.join(map(str, cfg.hidden))}-"
                     f"{x.shape[1]} "
                     f"(run {run_dir}, trained {run.provenance()['epochs_done']} epoch(s) on "
                     f"{Path(cfg.data).name}); N = {args.points} points simulated from it (seed "
                     f"{args.seed}); AIS {args.chains} chains, {args.leapfrog} leapfrog steps, "
                     f"init {args.init}, {args.schedule} schedule, initial step size "
                     f"{args.step_size:g} adapted towards acceptance 0.65"),
        "device": device_description(), "command": command, "train_command": train_command,
        "train_seconds": train_seconds, "estimate_seconds": estimate_seconds,
        "tabulate_seconds": time.perf_counter() - t0, "projection": projection(est, args),
        "provenance": run.provenance(), "simulated_pixel_mean": float(x.float().mean()),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    t["summary"].to_csv(args.out / "summary.csv", index=False)
    t["points"].to_csv(args.out / "points.csv", index=False)
    t["bdmc"].to_csv(args.out / "bdmc.csv", index=False)
    t["prediction"].to_csv(args.out / "prediction.csv", index=False)
    png = plot(t, args, args.out / "bdmc_study.png",
               f"{info['settings']}\n{info['device']}")
    if args.doc is not None:
        figure = args.doc.parent / "figures" / "bdmc_study.png"
        figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, figure)
        rel = f"figures/{figure.name}"
    else:
        rel = png.name
    info["wall_seconds"] = time.perf_counter() - t_start
    section = markdown(t, info, rel)
    (args.out / "bdmc_study.md").write_text(section + "\n")
    if args.doc is not None:
        write_doc(args.doc, section)
    (args.out / "bdmc_study.json").write_text(json.dumps(
        _json({**info, **{k: v for k, v in t.items()}}), indent=1, default=str))
    (args.out / "command.txt").write_text(command + "\n")
    torch.save({"x": x, "z": z}, args.out / "simulated.pt")
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
