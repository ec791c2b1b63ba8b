"""The compiled training step against the generic one and against hand-written torch.

For each objective (``--objectives``, default ``trace,iwae-5,dreg-5,iwae-50``) one training
step (loss, gradient, fused Adam) on a minibatch of 100 of the VAE of ``benchmarks/speed.py``
(784-500-500-2x50 / 50-500-500-784, ReLU, Bernoulli), in-process, interleaved, medians with
min-max over ``--repeats`` blocks of ``--steps`` steps:

* ``compiled``: :class:`ppl_vae.infer.svi.SVI` with ``compile=True`` (the step captured once and
  run through ``torch.compile``), against ``generic`` (the same SVI, ``compile=False``) and
  against the hand-written eager torch step of the same estimator (``benchmarks/references.py``:
  the batched IWAE step, which for K = 1 is the ELBO step; DReG is timed against the IWAE step
  of the same K, the same network work);
* the achieved GFLOP/s of the compiled step (FLOPs counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the hand-written step) against a 2048^3 matmul;
* the compile time, and the projected seconds per epoch of 50,000 points.

Usage: ``python benchmarks/compiled_speed.py [--smoke] [--threads N] [--out DIR]``; writes
``compiled_speed.json``/``.csv`` under ``--out`` (default
``$TMPDIR/ppl_vae_benchmarks/compiled_speed``), nothing else.
"""

from __future__ import annotations

import json
import sys
import time

import references
import torch
from _common import default_out, interleave, parser, ratio_row, set_threads


def _pair(hidden, latent):
    from ppl_vae.training.builders import build_model_and_guide
    from ppl_vae.training.config import TrainConfig

    torch.manual_seed(0)
    return build_model_and_guide(TrainConfig(latent_dims=(latent,), hidden=hidden), 784)


def _svi(name, compile, hidden, latent, x):
    import pyro

    from ppl_vae.infer.svi import SVI

    model, guide = _pair(hidden, latent)
    svi = SVI(model, guide, name, lr=1e-3, modules=(model, guide), compile=compile)
    with pyro.validation_enabled(False):
        t0 = time.perf_counter()
        svi.step(x, num_data=50_000)  # generic first step
        svi.step(x, num_data=50_000)  # the capture and compilation
    return svi, time.perf_counter() - t0


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _matmul_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9


def measure(args) -> list[dict]:
    x = torch.bernoulli(torch.full((100, 784), 0.2), generator=torch.Generator().manual_seed(0))
    hidden, latent = tuple(args.hidden), args.latent
    peak = _matmul_gflops()
    rows = []
    for name in args.objectives:
        k = int(name.split("-")[1]) if "-" in name else 1
        compiled, compile_s = _svi(name, True, hidden, latent, x)
        generic, _ = _svi(name, False, hidden, latent, x)
        vae = references.TorchVAE(hidden=hidden, z_dim=latent)
        opt = torch.optim.Adam(vae.parameters(), lr=1e-3)

        def steps(fn, n=args.steps):
            for _ in range(n):
                fn()

        times = interleave({
            "compiled": lambda: steps(lambda: compiled.step(x, num_data=50_000)),
            "generic": lambda: steps(lambda: generic.step(x, num_data=50_000)),
            "ref": lambda: steps(lambda: references.iwae_step(vae, opt, x, k, 50_000))},
            args.repeats)
        per = args.steps
        flops = _flops(lambda: references.iwae_step(vae, opt, x, k, 50_000))
        for ours, ref, label in (("compiled", "generic", "generic ppl_vae step"),
                                 ("compiled", "ref", "hand-written eager torch step")):
            row = ratio_row(f"{name} compiled step vs {label}", times, ours, ref, per=per,
                            higher_is_better=True, goal=1.5 if ref == "ref" else None)
            row.update(objective=name, compile_seconds=compile_s,
                       compiled=generic.compile_notice is None and compiled.compiled is not None,
                       gflops=flops / row["ours_median_s"] / 1e9, matmul_gflops=peak,
                       epoch_seconds_projected=row["ours_median_s"] * 500)
            rows.append(row)
    return rows


def main(argv=None) -> int:
    p = parser(__doc__, out=default_out("compiled_speed"), threads=True,
               smoke="a 784-32-32-4 VAE, trace and iwae-2, 3 steps, 1 repeat (seconds)")
    p.add_argument("--objectives", default="trace,iwae-5,dreg-5,iwae-50")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    args.objectives = args.objectives.split(",")
    args.hidden, args.latent = (500, 500), 50
    if args.smoke:
        args.objectives, args.steps, args.repeats = ["trace", "iwae-2"], 3, 1
        args.hidden, args.latent = (32, 32), 4
    set_threads(args.threads)
    rows = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__,
            "command": "python benchmarks/compiled_speed.py " + " ".join(argv or sys.argv[1:])}
    (args.out / "compiled_speed.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                             indent=2))
    import pandas as pd

    pd.DataFrame(rows).to_csv(args.out / "compiled_speed.csv", index=False)
    for r in rows:
        print(f"{r['target']}: {r['ratio']:.2f}x faster ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"
              f"; compiled {r['ours_median_s'] * 1e3:.1f} ms/step ({r['gflops']:.0f} GFLOP/s of "
              f"{r['matmul_gflops']:.0f}), {r['epoch_seconds_projected']:.1f} s/epoch projected; "
              f"compile {r['compile_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
