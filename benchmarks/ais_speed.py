"""AIS speed: ppl_vae's annealed importance sampling against plain torch, per leapfrog step.

Three ratios, measured in one run, interleaved, medians with min-max over ``--repeats``
(architecture of ``benchmarks/speed.py``: decoder 50-500-500-784 and encoder 784-500-500-2x50,
ReLU, Bernoulli; ``--points`` test images of static binarized MNIST, or Bernoulli noise when the
file is absent; ``--chains`` chains, ``--steps`` temperatures, ``--leapfrog`` steps, the sigmoid
schedule, init from the guide):

* ``per leapfrog vs plain-torch gradient``: the seconds of one
  ``annealed_importance_sampling`` run divided by its steps x leapfrog gradient evaluations,
  against one call of the plain-torch gradient of the same annealed log-density
  (``references.ais_parts``: log q, log p(x, z) and both gradients, no HMC bookkeeping);
  goal <= 1.2x.
* ``vs hand-written HMC-AIS``: points/s of ppl_vae's AIS against ``references.ais`` (the same
  schedule, leapfrog steps and step-size adaptation, written for this VAE alone); goal >= 1.0x.
* ``recorded vs traced``: ppl_vae's AIS with its potential recorded as a graph (the default for
  blocks of at least ``RECORD_MIN_GRADIENTS`` gradient evaluations) against the same AIS
  tracing the Pyro model on every leapfrog step (the path before the recording); goal >= 2x.

Usage: ``python benchmarks/ais_speed.py [--smoke] [--threads N] [--out DIR]``; writes
``ais_speed.json`` and ``ais_speed.csv`` under ``--out`` (default
``$TMPDIR/ppl_vae_benchmarks/ais_speed``), nothing else.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import references
import torch
from _common import default_out, interleave, mnist_path, parser, ratio_row, set_threads


def _data(points: int) -> torch.Tensor:
    path = mnist_path(required=False)
    if path is not None:
        return torch.from_numpy(np.load(path)["test"][:points]).float()
    return torch.bernoulli(torch.full((points, 784), 0.2),
                           generator=torch.Generator().manual_seed(0))


def _pair():
    from ppl_vae.training.builders import build_model_and_guide
    from ppl_vae.training.config import TrainConfig

    torch.manual_seed(0)
    model, guide = build_model_and_guide(TrainConfig(latent_dims=(50,), hidden=(500, 500)), 784)
    return model.eval(), guide.eval()


def measure(args) -> list[dict]:
    import ppl_vae.marginal.ais as ais_module
    from ppl_vae.marginal import annealed_importance_sampling

    model, guide = _pair()
    vae = references.TorchVAE().load_pair(model, guide)
    x = _data(args.points)
    c, t, lf = args.chains, args.steps, args.leapfrog
    parts, loc, scale = references.ais_parts(vae, x, c)
    z = loc + scale * torch.randn(c, *loc.shape)
    calls = t * lf

    def ours(record=True):
        saved = ais_module.RECORD_MIN_GRADIENTS
        ais_module.RECORD_MIN_GRADIENTS = 0 if record else float("inf")
        try:
            annealed_importance_sampling(model, guide, x, c, t, num_leapfrog=lf, seed=0,
                                         progress=False)
        finally:
            ais_module.RECORD_MIN_GRADIENTS = saved

    def plain():
        for _ in range(calls):
            parts(z)

    times = interleave({"ours": ours, "plain": plain,
                        "ref": lambda: references.ais(vae, x, c, t, lf),
                        "traced": lambda: ours(record=False)}, args.repeats)
    shape = f"{c} chains x {args.points} points, T={t}, {lf} leapfrog"
    return [
        ratio_row(f"AIS per leapfrog step vs the plain-torch annealed gradient ({shape})",
                  times, "ours", "plain", per=calls, goal=1.2),
        ratio_row(f"AIS vs hand-written HMC-AIS, points/s ({shape})", times, "ours", "ref",
                  higher_is_better=True, goal=1.0),
        ratio_row(f"AIS recorded potential vs traced every step, points/s ({shape})", times,
                  "ours", "traced", higher_is_better=True, goal=2.0),
    ]


def main(argv=None) -> int:
    p = parser(__doc__, out=default_out("ais_speed"), threads=True,
               smoke="8 points, 4 chains, T=50, 2 leapfrog, 1 repeat (seconds)")
    p.add_argument("--points", type=int, default=64)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--steps", type=int, default=50, help="temperatures T (default 50)")
    p.add_argument("--leapfrog", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.smoke:
        args.points, args.chains, args.steps, args.leapfrog, args.repeats = 8, 4, 50, 2, 1
    set_threads(args.threads)
    rows = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    (args.out / "ais_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    import pandas as pd

    pd.DataFrame(rows).to_csv(args.out / "ais_speed.csv", index=False)
    for row in rows:
        met = "" if row.get("met") is None else (" met" if row["met"] else " NOT met")
        print(f"{row['target']}: {row['ratio']:.2f}x ({row['ratio_min']:.2f}-"
              f"{row['ratio_max']:.2f}), goal {row['goal']}{met}; ours "
              f"{row['ours_median_s'] * 1e3:.2f} ms, reference {row['ref_median_s'] * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
