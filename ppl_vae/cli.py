"""The ``ppl-vae`` command line: one subcommand per module in :mod:`ppl_vae.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import PplVaeError

__all__ = ["main", "build_parser"]

# Each module defines NAME, HELP, add_arguments(parser) and run(args) -> int.
COMMANDS = ("train", "sample", "grad_variance", "compare_estimators", "evaluate", "reconstruct",
            "interpolate", "manifold", "attribute", "impute", "posterior", "embed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppl-vae", description="Variational autoencoders as Pyro model/guide pairs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod_name in COMMANDS:
        mod = importlib.import_module(f"ppl_vae.commands.{mod_name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except PplVaeError as exc:
        print(f"ppl-vae {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
