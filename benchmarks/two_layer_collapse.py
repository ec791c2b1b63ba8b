"""Why does z2 of the 2-layer VAE collapse? A reduced-size factor sweep (issue 10, item 2).

Burda et al.'s (2016) architecture (tanh, 784-200-200-z1(100) -100-100- z2(50)) on a subset of
statically binarized MNIST; each config changes *one* factor against the baseline ``2L-bu``
(bottom-up guide, no warm-up, Adam lr 1e-3, ``trace``, PyTorch's initialisation).

Configs (``--configs``; ``--set KEY=VALUE`` changes a TrainConfig field in all of them):

* ``1L``: one stochastic layer z(50), the reference; ``1L-100``: one layer of 100; ``1L-hier``:
  one layer built as HierarchicalVAE + TopDownGuide (the 2-layer code path, L = 1).
* ``2L-bu``: the baseline; ``2L-bu-wu``: KL warm-up over the first half of the epochs;
  ``2L-bu-lr3``: Adam lr 3e-4; ``2L-bu-iw5``: objective iwae-5.
* ``2L-td``, ``2L-td-wu``: the top-down (ladder) guide, without and with warm-up.
* ``2L-bu-std``, ``2L-td-std``: ``prior_init="standard"`` (p(z1 | z2) starts as N(0, I)).
* ``1L-b``, ``2L-bu-b``, ``2L-td-b``, ``2L-bu-b-wu``: ``weight_init="burda"``, the
  initialisation of Burda et al.'s code (:mod:`ppl_vae.training.initialization`).
* ``2L-bu-glorot``, ``2L-bu-unit-scale``, ``2L-bu-pixel-bias``, ``1L-pixel-bias``,
  ``2L-td-pixel-bias``: one part of that initialisation alone.

After every epoch: train/valid ELBO and active units per layer (Burda's criterion,
Cov_x E_q[z_u|x] > 0.01, on the valid subset); at the end the IS estimate of log p(x) on the test
subset. Writes ``OUT/trajectory.csv`` (config, epoch, ...) and ``OUT/results.md``. Finished
configs are skipped on a re-run (their rows are read back), so the sweep is resumable.

    python benchmarks/two_layer_collapse.py --train-points 20000 --epochs 30 --out /tmp/collapse
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import torch
from _common import default_out, markdown_table, parser, set_threads, subset

import ppl_vae  # noqa: F401
from ppl_vae.analysis.active_units import active_units
from ppl_vae.io.data import Dataset, load_dataset
from ppl_vae.marginal import importance_sampling
from ppl_vae.training.loop import train

BASE = dict(latent_dims=(100, 50), hidden=(200, 200), activation="tanh", likelihood="bernoulli",
            batch_size=100, lr=1e-3, guide="bottom-up", objective="trace")
CONFIGS = {
    "2L-bu": {},
    "2L-td": dict(guide="top-down"),
    "2L-bu-wu": dict(kl_warmup_epochs="half"),
    "2L-td-wu": dict(guide="top-down", kl_warmup_epochs="half"),
    "1L": dict(latent_dims=(50,)),
    "2L-bu-lr3": dict(lr=3e-4),
    "2L-bu-iw5": dict(objective="iwae", particles=5),
    "1L-hier": dict(latent_dims=(50,), guide="top-down"),
    "2L-bu-std": dict(prior_init="standard"),
    "2L-td-std": dict(guide="top-down", prior_init="standard"),
    "1L-100": dict(latent_dims=(100,)),
    "1L-b": dict(latent_dims=(50,), weight_init="burda"),
    "2L-bu-b": dict(weight_init="burda"),
    "2L-td-b": dict(guide="top-down", weight_init="burda"),
    "2L-bu-glorot": dict(weight_init="glorot"),
    "2L-bu-unit-scale": dict(weight_init="unit-scale"),
    "2L-bu-pixel-bias": dict(weight_init="pixel-bias"),
    "2L-bu-b-wu": dict(weight_init="burda", kl_warmup_epochs="half"),
    "1L-pixel-bias": dict(latent_dims=(50,), weight_init="pixel-bias"),
    "2L-td-pixel-bias": dict(guide="top-down", weight_init="pixel-bias"),
}


def run_config(name: str, ds: Dataset, args, out: Path) -> list[dict]:
    over = dict(CONFIGS[name])
    if over.get("kl_warmup_epochs") == "half":
        over["kl_warmup_epochs"] = max(1, args.epochs // 2)
    config = {**BASE, **over, **args.set, "data": "binarized-mnist", "seed": args.seed}
    run_dir, rows = out / name, []
    for epoch in range(1, args.epochs + 1):
        res = train({**config, "epochs": epoch}, out=run_dir, resume=epoch > 1, dataset=ds,
                    progress=False, epochs=epoch, device=args.device, overwrite=epoch == 1)
        res.guide.eval()
        units = active_units(res.guide, ds.valid, num_samples=10, seed=args.seed)
        res.guide.train()
        m = res.metrics.iloc[-1]
        rows.append({"config": name, "epoch": epoch, "train_elbo": m.train_elbo,
                     "valid_elbo": m.valid_elbo, "seconds": m.seconds,
                     **{f"au_{k}": v for k, v in units.counts.items()}})
        print(name, rows[-1], flush=True)
    res.model.eval(), res.guide.eval()
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    is_res = importance_sampling(res.model, res.guide, ds.test, num_samples=args.k,
                                 progress=False)
    rows[-1]["test_is"] = float(is_res.log_likelihood.double().mean())
    rows[-1]["test_is_seconds"] = time.perf_counter() - t0
    return rows


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--set takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv=None) -> int:
    p = parser(__doc__, out=default_out("two_layer_collapse"), threads=True, device=True,
               seed=True)
    p.add_argument("--data", default="binarized-mnist")
    p.add_argument("--train-points", type=int, default=20000)
    p.add_argument("--eval-points", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--k", type=int, default=1000, help="IS samples per test point")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig field in every config, e.g. batch_size=20 "
                        "(VALUE is read as JSON when it parses, else as a string)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    args.set = dict(_key_value(kv) for kv in args.set)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    full = load_dataset(args.data, likelihood="bernoulli")
    ds = subset(full, args.train_points, args.eval_points, f"{full.name}[:{args.train_points}]")
    traj_path = out / "trajectory.csv"
    old = pd.read_csv(traj_path) if traj_path.is_file() else pd.DataFrame(columns=["config"])
    for name in [c for c in args.configs.split(",") if c]:
        if name in set(old["config"]):
            continue
        rows = run_config(name, ds, args, out)
        old = pd.concat([old, pd.DataFrame(rows)], ignore_index=True)
        old.to_csv(traj_path, index=False)
    final = old.dropna(subset=["test_is"]) if "test_is" in old else old
    (out / "results.md").write_text(markdown_table(final))
    print(final.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
