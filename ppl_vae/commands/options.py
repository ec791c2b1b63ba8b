"""The options the subcommands share, defined once: ``--run``, ``--checkpoint``, ``--out``,
``--split``, ``--seed``, ``--device``, ``--json``, ``-n/--num``; loading a run with one-line
errors, and parsing lists of numbers."""

from __future__ import annotations

import json
from pathlib import Path


def add_checkpoint(p) -> None:
    """``--checkpoint best|last`` for commands that load a run
    (:func:`ppl_vae.training.runs.load_run`)."""
    from ppl_vae.training.runs import CHECKPOINTS

    p.add_argument("--checkpoint", choices=CHECKPOINTS, default="best",
                   help="best: the epoch with the best validation ELBO (best.pt; default, falls "
                        "back to checkpoint.pt); last: the last epoch (checkpoint.pt)")


def add_run(p, *, repeat: bool = False) -> None:
    """``--run DIR`` (``repeat``: one or more) and ``--checkpoint``."""
    if repeat:
        p.add_argument("--run", required=True, action="append", metavar="DIR",
                       help="run directory (repeat --run for several runs, shown side by side)")
    else:
        p.add_argument("--run", required=True, metavar="DIR",
                       help="run directory written by `ppl-vae train`")
    add_checkpoint(p)


def add_split(p, default: str = "test", help: str | None = None) -> None:
    p.add_argument("--split", default=default, metavar="SPLIT",
                   help=help or f"data split: train, valid or test (default {default})")


def add_seed(p) -> None:
    p.add_argument("--seed", type=int, default=0, metavar="SEED", help="random seed (default 0)")


def add_device(p) -> None:
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="torch device, e.g. cpu (default) or cuda")


def add_json(p, help: str = "print exactly one JSON object on stdout") -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_common(p, *, out_help="output PNG file", split=True, json_flag=False, num=None,
               num_help="number of images"):
    """What the toolkit commands (sample, reconstruct, interpolate, manifold, attribute, impute,
    posterior) share: ``--run``, ``--checkpoint``, ``--out``, ``--split``, ``--seed``,
    ``--device``, ``-n/--num`` and ``--json`` (the last two where asked for)."""
    add_run(p)
    p.add_argument("--out", required=True, metavar="FILE.png" if "PNG" in out_help else "DIR",
                   help=out_help)
    if split:
        add_split(p)
    add_seed(p)
    add_device(p)
    if num is not None:
        p.add_argument("-n", "--num", type=int, default=num, metavar="N",
                       help=f"{num_help} (default {num})")
    if json_flag:
        add_json(p)


def add_ais(p, *, step_size: float = 0.05, step_note: str = "") -> None:
    """The AIS options of ``evaluate`` and ``bdmc``: ``--anneal-steps``, ``--leapfrog``,
    ``--step-size``, ``--init``, ``--schedule`` (choices from the estimator itself)."""
    from ppl_vae.marginal.common import AIS_SCHEDULES

    g = p.add_argument_group("AIS options")
    g.add_argument("--anneal-steps", type=int, default=1000, metavar="T",
                   help="annealing steps T, i.e. temperatures (default 1000)")
    g.add_argument("--leapfrog", type=int, default=10, metavar="L",
                   help="leapfrog steps per HMC transition (default 10)")
    g.add_argument("--step-size", type=float, default=step_size, metavar="EPS",
                   help=f"initial HMC step size, adapted towards 65%% acceptance (default "
                        f"{step_size:g}{step_note})")
    g.add_argument("--init", choices=("guide", "prior"), default="guide",
                   help="initial distribution of the chains (default guide)")
    g.add_argument("--schedule", choices=AIS_SCHEDULES, default="sigmoid",
                   help="spacing of the temperatures beta (default sigmoid, Wu et al. 2017)")


def positive(value, flag: str) -> int:
    from ppl_vae.errors import ConfigError

    if value is None or int(value) < 1:
        raise ConfigError(f"{flag} must be >= 1, got {value}")
    return int(value)


def load(args, run_dir=None):
    """The run of ``--run`` on ``--device`` (model and guide in eval mode), seeded with
    ``--seed``; :class:`ConfigError` for a missing directory."""
    import pyro

    from ppl_vae.errors import ConfigError
    from ppl_vae.io.reporting import resolve_device
    from ppl_vae.training.runs import load_run

    run_dir = Path(run_dir or args.run)
    if not run_dir.exists():
        raise ConfigError(f"--run {run_dir}: no such run directory")
    device = resolve_device(args.device)
    r = load_run(run_dir, map_location=str(device), checkpoint=args.checkpoint)
    r.model.to(device)
    r.guide.to(device)
    pyro.set_rng_seed(args.seed)
    from ppl_vae.io.provenance import declare

    declare(r.provenance())  # PNGs and JSON written from now on name this checkpoint
    return r, device


def data(r, args, device):
    """The ``--split`` of the run's data set, as the likelihood sees it at evaluation."""
    return r.split(args.split).to(device)


def check_index(i: int, n: int, flag: str = "--index") -> int:
    from ppl_vae.errors import ConfigError

    if not -n <= int(i) < n:
        raise ConfigError(f"{flag} {i} is out of range: the split has {n} data points "
                          f"(0..{n - 1})")
    return int(i) % n


def number_list(text: str, flag: str, kind=int) -> list:
    """``"0,3"`` -> ``[0, 3]`` (``kind`` int or float), with one clear error line."""
    from ppl_vae.errors import ConfigError

    what = "integers" if kind is int else "numbers"
    try:
        out = [kind(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"{flag} must be a comma-separated list of {what}, got {text!r}")
    if not out:
        raise ConfigError(f"{flag} needs at least one of the {what}")
    return out


def int_list(text: str, flag: str) -> list[int]:
    return number_list(text, flag, int)


def float_list(text: str, flag: str) -> list[float]:
    return number_list(text, flag, float)


def emit_json(obj: dict) -> None:
    """Exactly one JSON object on stdout (NaN/inf as null, tensors as lists), with the
    ``provenance`` of the one run it came from."""
    from ppl_vae.io.provenance import sources
    from ppl_vae.io.reporting import json_safe

    found = sources()
    if len(found) == 1 and "provenance" not in obj:
        obj = {**obj, "provenance": found[0]}
    print(json.dumps(json_safe(obj), allow_nan=False))


def out_png(path) -> Path:
    from ppl_vae.errors import ConfigError

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--out {path}: give a .png file name")
    if path.is_dir():
        raise ConfigError(f"--out {path} is a directory; give a .png file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
