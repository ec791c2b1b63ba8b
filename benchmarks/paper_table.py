"""The literature's numbers on statically binarized MNIST (issue 10): train, evaluate, tabulate.

Rows: VAE, IWAE-5, IWAE-50, DReG-5 (objectives ``trace``, ``iwae-5``, ``iwae-50``, ``dreg-5``),
each with 1 stochastic layer (784-200-200-50, tanh) and 2 (784-200-200-100-100-100-50, tanh;
guide ``--guide2``), the architecture of Burda, Grosse & Salakhutdinov (2016). Training as in
their section 5: Adam (beta 0.9/0.999, eps 1e-4), batch 20 (``--batch-size``), the ``burda``
schedule (3**i epochs at lr 1e-3 * 10**(-i/7), i = 0..7; 3280 epochs; ``--epochs`` caps it), the
initialisation of their code (``--weight-init burda``: Glorot weights, unit initial scales, decoder
bias at the pixel means; with PyTorch's default the 2-layer model collapses), early stopping on the
validation ELBO (``--patience``), ``best.pt`` evaluated. Evaluation: log p(x) by importance
sampling with the guide as proposal, K = 5000 on the full test set (``--k``,
``--test-points``), and active units per layer (Cov_x E_q[z_u|x] > 0.01).

Writes ``OUT/paper_table.csv``, ``OUT/nll_vs_epoch.png`` (the validation -ELBO per epoch, an
upper bound on the NLL, with the final IS NLL as a marker; copied beside the doc as
``figures/<doc name>_nll_vs_epoch.png``) and the markdown table ``--doc`` (default
``OUT/paper_table.md``; into ``docs/`` only when asked: ``--doc docs/paper_table_cpu.md``) with
the published numbers beside ours, the goals and, for rows that miss theirs, the projected epochs
to the goal. Nothing is written outside ``OUT`` and ``--doc``'s folder. Every training lives in
``OUT/<row>/`` (a normal run directory: ``ppl-vae evaluate --run OUT/<row>`` works on it) and is
resumed where it stopped: rerun the same command after an interruption.

    # the full table (GPU; days of compute for all rows at 3280 epochs)
    python benchmarks/paper_table.py --device cuda --out /data/paper --epochs 3280 --patience 100
    # one row
    python benchmarks/paper_table.py --rows vae-1l --epochs 200 --out /tmp/paper
    # the smoke test (embedded digits, tiny nets, seconds): /tmp/paper-smoke/paper_table.md
    python benchmarks/paper_table.py --smoke --out /tmp/paper-smoke
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import command_line, markdown_table, parser, set_threads, write_text

import ppl_vae  # noqa: F401
from ppl_vae.analysis.active_units import active_units
from ppl_vae.errors import CheckpointError
from ppl_vae.io.checkpoint import atomic_write_bytes
from ppl_vae.io.reporting import resolve_device
from ppl_vae.marginal import importance_sampling
from ppl_vae.training.loop import train
from ppl_vae.training.runs import load_run

OBJECTIVES = {"vae": "trace", "iwae-5": "iwae-5", "iwae-50": "iwae-50", "dreg-5": "dreg-5"}
LAYERS = {"1l": dict(latent_dims=(50,)), "2l": dict(latent_dims=(100, 50))}
ROWS = [f"{o}-{n}" for o in OBJECTIVES for n in LAYERS]
COMMON = dict(hidden=(200, 200), activation="tanh", likelihood="bernoulli", batch_size=20,
              lr=1e-3, schedule="burda", adam_eps=1e-4, adam_betas=(0.9, 0.999))
# Published test NLL (nats), statically binarized MNIST, one stochastic layer.
PUBLISHED = {
    "vae-1l": "88.71 (Burda k=1); 89.78 (pythae)",
    "iwae-5-1l": "87.63 (Burda)",
    "iwae-50-1l": "87.10 (Burda); 86.82 (pythae)",
}
CACHE_VERSION = 2  # of the row entries in OUT/<row>/paper_row.json
GOALS = {"vae-1l": 89.5, "iwae-5-1l": 87.63, "iwae-50-1l": 87.10}  # vae-2l: vae-1l minus 1


def parse_args(argv=None):
    p = parser(__doc__, out_help="run directory root (outside the repo)", threads=True,
               device=True, seed=True,
               smoke="digits, tiny nets, 2 epochs, K=20 on 50 test points (seconds)")
    p.add_argument("--data", default="binarized-mnist")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated from {ROWS}")
    p.add_argument("--epochs", type=int, default=3280, help="cap on the burda schedule")
    p.add_argument("--patience", type=int, default=0, help="early stopping (0 = off)")
    p.add_argument("--kl-warmup", type=int, default=0)
    p.add_argument("--guide2", default="bottom-up", help="guide of the 2-layer rows")
    p.add_argument("--prior-init", default="random",
                   help="2-layer rows: how p(z1|z2) starts, random or standard (TrainConfig)")
    p.add_argument("--weight-init", default="burda",
                   help="burda (default: their code's initialisation) or torch (TrainConfig)")
    p.add_argument("--batch-size", type=int, default=COMMON["batch_size"],
                   help="minibatch size (Burda et al.: 20)")
    p.add_argument("--train-only", action="store_true",
                   help="train (or resume) the rows and stop: several such processes can train "
                        "rows side by side; a later run without it evaluates and tabulates")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate and tabulate the rows as trained so far, training nothing "
                        "(rows trained with different --epochs in one table)")
    p.add_argument("--k", type=int, default=5000, help="IS samples per test point")
    p.add_argument("--row-k", action="append", default=[], metavar="ROW=K",
                   help="IS samples for one row (repeatable), e.g. iwae-5-1l=1000")
    p.add_argument("--test-points", type=int, default=None, help="default: the full test set")
    p.add_argument("--doc", type=Path, default=None,
                   help="the markdown table (default OUT/paper_table.md; e.g. "
                        "docs/paper_table.md to regenerate the repository's copy)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        args.row_k = {r: int(k) for r, _, k in (t.partition("=") for t in args.row_k)}
    except ValueError:
        p.error(f"--row-k takes ROW=K with an integer K, got {args.row_k}")
    return args


def row_config(row: str, args) -> dict:
    obj, layers = row.rsplit("-", 1)
    cfg = {**COMMON, **LAYERS[layers], "objective": OBJECTIVES[obj], "data": args.data,
           "epochs": args.epochs, "patience": args.patience, "seed": args.seed,
           "kl_warmup_epochs": args.kl_warmup, "batch_size": args.batch_size,
           "weight_init": args.weight_init,
           "prior_init": args.prior_init if layers == "2l" else "random",
           "guide": args.guide2 if layers == "2l" else "bottom-up"}
    if args.smoke:
        cfg.update(hidden=(16,), latent_dims=(4,) if layers == "1l" else (6, 3), batch_size=100,
                   lr=3e-3)
    return cfg


def train_row(run_dir: Path, cfg: dict, args, device) -> None:
    """Train (or resume) the row's run to ``cfg['epochs']`` epochs or early stopping."""
    resume = (run_dir / "checkpoint.pt").is_file()
    train(cfg if not resume else None, out=run_dir, resume=resume, device=device,
          progress=not args.no_progress,
          **({"epochs": cfg["epochs"], "patience": cfg["patience"]} if resume else {}))


def projected_epochs(metrics: pd.DataFrame, gap: float, goal: float) -> float:
    """Epochs at which -valid ELBO - gap (the IS NLL implied by the bound) reaches ``goal``,
    extrapolating the last half of the curve linearly in log(epoch); NaN when not improving."""
    m = metrics[metrics.epoch >= max(2, metrics.epoch.max() // 2)]
    if len(m) < 2:
        return float("nan")
    slope, icpt = np.polyfit(np.log(m.epoch), -m.valid_elbo - gap, 1)
    if slope >= 0:
        return float("nan")
    return float(math.exp((goal - icpt) / slope))


def row_k(row: str, args) -> int:
    """IS samples per test point for ``row``: ``--row-k ROW=K`` where given, else ``--k``."""
    return args.row_k.get(row, args.k)


def evaluate_row(row: str, run_dir: Path, args, device) -> dict:
    """The row's table entry, from ``OUT/<row>/paper_row.json`` when that was computed for the
    same checkpoint and evaluation settings (so rows can be evaluated in separate processes)."""
    cache = run_dir / "paper_row.json"
    key = {"version": CACHE_VERSION, "k": row_k(row, args), "test_points": args.test_points,
           "seed": args.seed, "device": str(device),
           "best_mtime_ns": (run_dir / "best.pt").stat().st_mtime_ns,
           "last_mtime_ns": (run_dir / "checkpoint.pt").stat().st_mtime_ns}
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["row"]
    result = _evaluate(row, run_dir, args, device)
    atomic_write_bytes(cache, json.dumps({"key": key, "row": result}).encode())
    return result


def _evaluate(row: str, run_dir: Path, args, device) -> dict:
    run = load_run(run_dir, map_location=str(device))  # best.pt
    model, guide = run.model.to(device), run.guide.to(device)
    x = run.split("test")
    x = (x[: args.test_points] if args.test_points else x).to(device)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    k = row_k(row, args)
    res = importance_sampling(model, guide, x, num_samples=k, progress=not args.no_progress)
    eval_s = time.perf_counter() - t0
    units = active_units(guide, x, num_samples=20, seed=args.seed)
    last = load_run(run_dir, checkpoint="last").checkpoint
    metrics = pd.DataFrame(last["metrics"])
    nll = -float(res.log_likelihood.double().mean())
    elbo = float(res.log_weight_mean.double().mean())  # the ELBO: mean log weight
    return {"row": row, "objective": run.config.objective, "layers": len(run.config.latent_dims),
            "guide": run.config.guide, "weight_init": run.config.weight_init,
            "batch_size": run.config.batch_size, "epochs": int(last["epochs_done"]),
            "best_epoch": int(run.checkpoint["epochs_done"]), "test_nll": nll,
            "stderr": float(res.log_likelihood.double().std() / math.sqrt(x.shape[0])),
            "test_elbo": elbo, "k": k, "test_points": int(x.shape[0]),
            "active_units": ", ".join(f"{k} {v}/{units.dims[k]}"
                                      for k, v in units.counts.items()),
            "train_min": float(metrics.seconds.sum()) / 60, "eval_min": eval_s / 60,
            "device": str(device), "published": PUBLISHED.get(row, "—")}


def add_goals(df: pd.DataFrame, runs: dict, smoke: bool = False) -> pd.DataFrame:
    goals = {} if smoke else dict(GOALS)
    if "vae-1l" in set(df.row) and not smoke:
        goals["vae-2l"] = float(df.set_index("row").test_nll["vae-1l"]) - 1.0
    df["goal"] = [goals.get(r, float("nan")) for r in df.row]
    df["met"] = [("yes" if n <= g else "no") if not math.isnan(g) else ""
                 for n, g in zip(df.test_nll, df.goal)]
    proj = []
    for r, n, g, e in zip(df.row, df.test_nll, df.goal, df.test_elbo):
        m = runs[r]
        gap = (-float(m.valid_elbo.iloc[-1]) - n) if len(m) else 0.0
        proj.append(projected_epochs(m, gap, g) if not math.isnan(g) and n > g else float("nan"))
    df["projected_epochs"] = proj
    return df


def plot(runs: dict, df: pd.DataFrame, path: Path) -> None:
    from ppl_vae.io.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row, m in runs.items():
        if len(m):
            line, = ax.plot(m.epoch, -m.valid_elbo, label=row)
            r = df.set_index("row").loc[row]
            ax.plot([r.best_epoch], [r.test_nll], "o", color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats")
    ax.set_title("valid -ELBO per epoch (lines); test NLL by IS at best.pt (dots)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def write_doc(df: pd.DataFrame, args, path: Path, figure: Path) -> None:
    cols = ["row", "guide", "weight_init", "batch_size", "epochs", "best_epoch", "test_nll",
            "stderr", "published", "goal",
            "met", "projected_epochs", "active_units", "train_min", "eval_min", "device"]
    lines = ["# The literature's numbers (generated by benchmarks/paper_table.py)", "",
             f"Data `{args.data}`; test NLL = -log p(x) by IS with K = {args.k} (or the row's "
             f"`k`) on "
             f"{int(df.test_points.iloc[0])} test points, at `best.pt`. Published: Burda et al. "
             "(2016), fixed binarization, one layer; pythae's benchmark. `projected_epochs`: "
             "epochs at which the extrapolated curve reaches the goal (log-linear fit of the "
             "last half of the validation -ELBO, shifted by the final ELBO-IS gap).", "",
             markdown_table(df[cols]), f"![NLL vs epoch]({figure.relative_to(path.parent)})",
             "", f"Command: `{command_line('paper_table', args.argv)}`", ""]
    write_text(path, "\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.data, args.epochs, args.k, args.test_points = "digits", 2, 20, 50
        args.row_k = {r: min(k, args.k) for r, k in args.row_k.items()}
    device = resolve_device(args.device)
    set_threads(args.threads)
    out = args.out
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {ROWS}")
    results, runs = [], {}
    for row in rows:
        run_dir = out / row
        if args.eval_only and not (run_dir / "checkpoint.pt").is_file():
            raise SystemExit(f"{row}: no {run_dir / 'checkpoint.pt'} to evaluate (--eval-only)")
        try:
            if not args.eval_only:
                train_row(run_dir, row_config(row, args), args, device)
        except CheckpointError as exc:
            raise SystemExit(f"{row}: {exc}")
        if args.train_only:
            continue
        results.append(evaluate_row(row, run_dir, args, device))
        runs[row] = pd.DataFrame(load_run(run_dir, checkpoint="last").checkpoint["metrics"])
        print(results[-1], flush=True)
    if args.train_only:
        return 0
    df = add_goals(pd.DataFrame(results), runs, smoke=args.smoke)
    df.to_csv(out / "paper_table.csv", index=False)
    plot(runs, df, out / "nll_vs_epoch.png")
    doc = args.doc or out / "paper_table.md"
    figure = doc.parent / "figures" / f"{doc.stem}_nll_vs_epoch.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "nll_vs_epoch.png", figure)
    write_doc(df, args, doc, figure)
    print(markdown_table(df[["row", "epochs", "test_nll", "published", "active_units"]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
