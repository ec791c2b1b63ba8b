"""``ppl-vae bdmc``: the bidirectional Monte Carlo sandwich of log p(x) on data simulated from a
trained run (:func:`ppl_vae.marginal.bdmc.bidirectional_monte_carlo`)."""

from __future__ import annotations

import sys

from ppl_vae.commands import options as tk

NAME = "bdmc"
HELP = ("sandwich log p(x) between forward AIS (a lower bound) and reverse AIS from exact "
        "posterior samples (an upper bound) on data simulated from a trained run")


def add_arguments(p):
    tk.add_run(p)
    p.add_argument("-n", "--num", type=int, default=100, metavar="N",
                   help="points simulated from the model (default 100, Wu et al. 2017)")
    p.add_argument("--samples", "-k", type=int, default=16, metavar="K",
                   help="AIS chains per point in each direction (default 16)")
    tk.add_ais(p, step_size=0.01, step_note=", Wu et al.'s")
    tk.add_seed(p)
    tk.add_device(p)
    tk.add_json(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ppl_vae.marginal.bdmc import bidirectional_monte_carlo

    n = tk.positive(args.num, "--num")
    k = tk.positive(args.samples, "--samples")
    t = tk.positive(args.anneal_steps, "--anneal-steps")
    leap = tk.positive(args.leapfrog, "--leapfrog")
    r, device = tk.load(args)
    rows = n * k * t * leap * 2
    print(f"ppl-vae bdmc: {rows:,} gradient rows (forward + reverse AIS); the bars show an ETA",
          file=sys.stderr)
    res = bidirectional_monte_carlo(
        r.model, r.guide, k, t, num_points=n, init=args.init, schedule=args.schedule,
        num_leapfrog=leap, step_size=args.step_size, seed=args.seed,
        progress=not args.no_progress)
    s = res.summary()
    if args.json:
        tk.emit_json({"run": str(args.run), "init": args.init, "schedule": args.schedule,
                      **s, "per_point": {"lower": res.lower.log_likelihood.tolist(),
                                         "upper": res.upper.log_likelihood.tolist()}})
        return 0
    print(f"BDMC on {s['n']} points simulated from {args.run}: K={k} chains, T={t} "
          f"temperatures, init {args.init}, {args.schedule} schedule")
    print(f"forward AIS (stochastic lower bound on log p(x)): {s['lower']:.3f} "
          f"± {s['lower_stderr']:.3f} nats")
    print(f"reverse AIS (stochastic upper bound on log p(x)): {s['upper']:.3f} "
          f"± {s['upper_stderr']:.3f} nats")
    print(f"gap (bounds the error of both): mean {s['gap']:.3f}, max {s['gap_max']:.3f} nats;  "
          f"{s['seconds']:.1f} s")
    return 0
