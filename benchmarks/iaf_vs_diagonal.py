"""IAF vs diagonal guide: IS log-likelihood of two runs on the same test points (docs/toolkit.md).

Loads ``ROOT/bottom-up`` and ``ROOT/iaf`` (run directories of ``ppl-vae train``), estimates
log p(x) by importance sampling with K samples on the first N test points of each, and prints
one JSON object (per guide: log-likelihood, standard error, ELBO, ESS, seconds, epochs; the paired
difference iaf - diagonal). ``--out DIR`` also writes it to ``DIR/iaf_vs_diagonal.json``.

    python benchmarks/iaf_vs_diagonal.py K N [ROOT]     # ROOT default /tmp/wt11-runs/bm
"""

from __future__ import annotations

import json
import math
import sys
import time

import pyro
from _common import parser, set_threads, write_text

from ppl_vae import importance_sampling, load_run


def main(argv=None) -> int:
    p = parser(__doc__, out=None, threads=True, seed=True)
    p.add_argument("k", type=int, help="IS samples per test point")
    p.add_argument("n", type=int, help="the first N test points")
    p.add_argument("root", nargs="?", default="/tmp/wt11-runs/bm",
                   help="folder of the runs bottom-up/ and iaf/")
    p.add_argument("--out", default=None, help="also write DIR/iaf_vs_diagonal.json")
    p.set_defaults(threads=1)
    args = p.parse_args(argv)
    set_threads(args.threads)
    k, n = args.k, args.n
    out, lls = {}, {}
    for g in ("bottom-up", "iaf"):
        r = load_run(f"{args.root}/{g}")
        x = r.split("test")[:n]
        pyro.set_rng_seed(args.seed)
        t = time.time()
        res = importance_sampling(r.model, r.guide, x, k)
        lls[g] = res.log_likelihood
        out[g] = {"log_likelihood": float(res.log_likelihood.mean()),
                  "stderr": float(res.log_likelihood.std() / math.sqrt(n)),
                  "elbo": float(res.log_weight_mean.mean()), "ess_mean": float(res.ess.mean()),
                  "seconds": time.time() - t, "epochs": int(r.checkpoint["epochs_done"]),
                  "train_seconds": float(r.checkpoint["elapsed"])}
    d = lls["iaf"] - lls["bottom-up"]
    out["iaf_minus_diag"] = {"mean": float(d.mean()),
                             "paired_stderr": float(d.std() / math.sqrt(n))}
    out["K"], out["N"] = k, n
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        write_text(f"{args.out}/iaf_vs_diagonal.json", text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
