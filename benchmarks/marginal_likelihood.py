"""Marginal-likelihood comparison table for a trained run: ELBO, IS, naive MC and AIS.

For a run directory written by ``ppl-vae train`` (e.g. a binarized-MNIST VAE), runs one
``ppl-vae evaluate ... --json`` per row, each in its own process (so that every row's peak RSS is
its own and every row is reproducible by the exact command printed next to it):

* ``elbo`` with K = ``--elbo-samples`` (the mean of K log weights);
* ``is`` (importance sampling with the guide, the IWAE bound L_K) for every K in ``--ks``;
* ``naive`` (naive Monte Carlo from the prior) for every K in ``--ks``;
* ``ais`` (annealed importance sampling, HMC, ``--ais-samples`` chains x ``--ais-steps`` steps
  from the guide) on the first ``--ais-limit`` points (AIS costs ~steps x leapfrog times IS).

Writes ``--out`` (default ``RUN/marginal_likelihood_table.csv``) and a markdown table
(``--md``, default next to the CSV, ``.md``), printed on stdout too, with the commands.

Usage (the measurement in docs/marginal_likelihood.md)::

    python benchmarks/marginal_likelihood.py --run runs/bmnist --device cuda

A quick check on a small run (seconds)::

    ppl-vae train --data digits --epochs 2 --out /tmp/digits-run
    python benchmarks/marginal_likelihood.py --run /tmp/digits-run --ks 1,10,100 \\
        --elbo-samples 100 --ais-steps 50 --ais-limit 50

Costs on one CPU thread for a 784-500-500-50 VAE (measured): IS or naive MC ~36 µs per
(point, sample), so K = 5000 over the 10,000 test points takes ~30 min; AIS ~44 µs per (point,
chain, step, leapfrog step), so 16 chains x 500 steps x 10 leapfrog steps on 500 points takes
~30 min. A GPU (``--device cuda``) is much faster. ``--dry-run`` prints the commands only.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from _common import markdown_table, missing, parser

COLUMNS = [
    ("estimator", "estimator"), ("num_samples", "K"), ("n", "n"),
    ("log_likelihood", "log p(x) [nats]"), ("stderr", "stderr (points)"),
    ("mc_stderr", "MC stderr"), ("bits_per_dim", "bits/dim"), ("ess_mean", "ESS mean"),
    ("pareto_k_max", "k̂ max"), ("num_unreliable", "# k̂ > 0.7"), ("seconds", "seconds"),
    ("peak_rss_mb", "peak RSS [MB]"),
]


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv=None):
    p = parser(__doc__, out=None, device=True, seed=True)
    p.add_argument("--run", required=True, help="run directory written by `ppl-vae train`")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="first N points (default: all)")
    p.add_argument("--ks", type=_ints, default=[1, 10, 100, 1000, 5000],
                   help="sample budgets K for IS and naive MC (default 1,10,100,1000,5000)")
    p.add_argument("--elbo-samples", type=int, default=1000,
                   help="K for the ELBO row (default 1000)")
    p.add_argument("--ais-samples", type=int, default=16, help="AIS chains (default 16)")
    p.add_argument("--ais-steps", type=int, default=500, help="AIS steps T (default 500)")
    p.add_argument("--ais-leapfrog", type=int, default=10, help="leapfrog steps (default 10)")
    p.add_argument("--ais-init", choices=("guide", "prior"), default="guide")
    p.add_argument("--ais-limit", type=int, default=500,
                   help="AIS on the first N points only (default 500; 0 = skip AIS)")
    p.add_argument("--out", default=None,
                   help="CSV path (default RUN/marginal_likelihood_table.csv)")
    p.add_argument("--md", default=None, help="markdown path (default: the CSV path with .md)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p.parse_args(argv)


def commands(args) -> list[list[str]]:
    """The ``ppl-vae evaluate`` argument lists, one per table row."""
    base = ["evaluate", "--run", str(args.run), "--split", args.split, "--seed", str(args.seed),
            "--device", args.device, "--json", "--no-progress"]
    limit = ["--limit", str(args.limit)] if args.limit else []
    rows = [base + ["--estimator", "elbo", "--samples", str(args.elbo_samples)] + limit]
    rows += [base + ["--estimator", "is", "--samples", str(k)] + limit for k in args.ks]
    rows += [base + ["--estimator", "naive", "--samples", str(k)] + limit for k in args.ks]
    if args.ais_limit:
        ais_limit = min(args.ais_limit, args.limit) if args.limit else args.ais_limit
        rows.append(base + ["--estimator", "ais", "--samples", str(args.ais_samples),
                            "--anneal-steps", str(args.ais_steps),
                            "--leapfrog", str(args.ais_leapfrog),
                            "--init", args.ais_init, "--limit", str(ais_limit)])
    return rows


def _fmt(value, column: str) -> str:
    if missing(value) or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, str):
        return value
    if column in ("num_samples", "n", "num_unreliable"):
        return str(int(value))
    if column == "bits_per_dim":
        return f"{value:.4f}"
    if column in ("ess_mean", "seconds", "peak_rss_mb"):
        return f"{value:.1f}" if value < 1000 else f"{value:.0f}"
    if column == "pareto_k_max":
        return f"{value:.2f}"
    return f"{value:.2f}"


def markdown(df: pd.DataFrame) -> str:
    df = df.reindex(columns=[c for c, _ in COLUMNS] + ["command"])  # a column absent: "–"
    lines = [markdown_table(df, [c for c, _ in COLUMNS], [h for _, h in COLUMNS], _fmt)]
    lines.append("Commands (one per row, in order):")
    lines.append("")
    lines.append("```")
    lines.extend(df["command"])
    lines.append("```")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    cmds = commands(args)
    shown = ["ppl-vae " + shlex.join(c) for c in cmds]
    if args.dry_run:
        print("\n".join(shown))
        return 0
    out = Path(args.out) if args.out else Path(args.run) / "marginal_likelihood_table.csv"
    md = Path(args.md) if args.md else out.with_suffix(".md")
    rows = []
    for argv_, text in zip(cmds, shown):
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, "-m", "ppl_vae", *argv_], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print(f"failed (exit {proc.returncode}): {text}", file=sys.stderr)
            return proc.returncode
        if proc.stderr.strip():
            sys.stderr.write(proc.stderr)
        row = json.loads(proc.stdout)
        row["command"] = text
        rows.append(row)
        pd.DataFrame(rows).to_csv(out, index=False)  # keep partial results
        print(f"    log p(x) = {row['log_likelihood']:.3f} nats, {row['seconds']:.1f} s",
              file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    table = markdown(df)
    md.write_text(table + "\n")
    print(table)
    print(f"\nwrote {out} and {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
