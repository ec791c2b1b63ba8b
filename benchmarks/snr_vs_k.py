"""Gradient signal-to-noise ratio against the number of particles K, on a trained run.

For each multi-sample objective (iwae-K, dreg-K, rws-K, vimco-K) and each K, the encoder- and
decoder-gradient SNR (median over coordinates of |mean| / sd over G independent estimates, at
the run's parameters, one fixed training minibatch; ``ppl_vae.analysis.gradient_variance``).
Writes ``OUT/snr_vs_k.csv`` and ``OUT/snr_vs_k.png``. The claims checked
(docs/gradient_estimators.md): Rainforth et al. (2018) — IWAE's encoder SNR falls as K grows
(like K^-1/2) while its decoder SNR rises (like K^1/2); Tucker et al. (2019) — DReG's encoder
SNR does not fall with K.

    python benchmarks/snr_vs_k.py --run runs/digits --out /tmp/snr [--ks 2,4,8,16,32,64]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from _common import command_line, parser, set_threads, write_text

OBJECTIVES = ("iwae", "dreg", "rws", "vimco")


def main(argv=None) -> int:
    p = parser(__doc__, threads=True, seed=True, smoke="K = 2, 4; 5 draws; 16 points")
    p.add_argument("--run", required=True, help="a run directory of ppl-vae train")
    p.add_argument("--ks", default="2,4,8,16,32,64", help="particle counts")
    p.add_argument("--draws", type=int, default=100, help="gradient estimates G per cell")
    p.add_argument("--batch-size", type=int, default=64, help="points in the minibatch")
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    args = p.parse_args(argv)
    set_threads(args.threads)
    import logging

    from ppl_vae.analysis.gradient_variance import run_gradient_statistics
    from ppl_vae.training.runs import load_run

    logging.getLogger("pyro").setLevel(logging.WARNING)  # after pyro's import sets its own

    ks = [2, 4] if args.smoke else [int(k) for k in args.ks.split(",")]
    draws, batch = (5, 16) if args.smoke else (args.draws, args.batch_size)
    names = [f"{o}-{k}" for o in args.objectives.split(",") for k in ks]
    run = load_run(args.run)
    results, _ = run_gradient_statistics(run, names, draws=draws, batch_size=batch,
                                         seed=args.seed, warmup=0)
    rows = [{"objective": name.rsplit("-", 1)[0], "k": int(name.rsplit("-", 1)[1]),
             "snr_encoder": r["snr_median_encoder"], "snr_decoder": r["snr_median_decoder"],
             "variance_encoder": r["variance_encoder"]} for name, r in results.items()]
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "snr_vs_k.csv", index=False)
    _plot(frame, args.out / "snr_vs_k.png",
          f"run {Path(args.run).name}, G = {draws} draws, batch {batch}")
    write_text(args.out / "command.txt", command_line("snr_vs_k", argv or sys.argv[1:]) + "\n")
    print(frame.to_string(index=False))
    return 0


def _plot(frame, path, subtitle):
    from ppl_vae.io.plots import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, col, what in zip(axes, ("snr_encoder", "snr_decoder"), ("encoder", "decoder")):
        for name, group in frame.groupby("objective"):
            ax.plot(group.k, group[col], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("K (particles)")
        ax.set_ylabel(f"median SNR, {what} gradient")
        ax.set_title(f"{what} SNR vs K")
    axes[0].legend()
    fig.suptitle(subtitle, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
