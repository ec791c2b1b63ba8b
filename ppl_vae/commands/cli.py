"""The ``ppl-vae`` command line: one subcommand per module in :mod:`ppl_vae.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ppl_vae.errors import DistributedError, PplVaeError

__all__ = ["main", "build_parser"]

# Each module defines NAME, HELP, add_arguments(parser) and run(args) -> int.
COMMANDS = ("train", "sample", "grad_variance", "compare_estimators", "evaluate", "reconstruct",
            "interpolate", "manifold", "attribute", "impute", "posterior", "embed", "bdmc")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only`` set to a command's name, the other subcommands get their name
    and help line but not their arguments (whose defaults may need torch: ``ppl-vae --help``
    and each command's start stay fast)."""
    parser = argparse.ArgumentParser(
        prog="ppl-vae", description="Variational autoencoders as Pyro model/guide pairs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod_name in COMMANDS:
        mod = importlib.import_module(f"ppl_vae.commands.{mod_name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        if only is None or only == mod.NAME:
            mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _fast_exit=getattr(mod, "FAST_EXIT", False))
    return parser


def _entry_point() -> bool:
    """Whether this process runs the command line itself (``ppl-vae``, ``python -m ppl_vae``,
    ``python -m ppl_vae.commands.cli``), not a program that calls :func:`main`."""
    here = os.path.dirname(os.path.abspath(__file__))
    prog = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return os.path.basename(prog) == "ppl-vae" or prog in (
        os.path.join(here, "cli.py"), os.path.join(os.path.dirname(here), "__main__.py"))


def exit_now(rc: int):
    """End the process at once: the ``atexit`` handlers run (log handlers flushed, ...) and
    stdout/stderr are flushed, but not the interpreter's teardown of every module and object,
    which takes ~0.3 s once torch and Pyro are imported (a tenth of a short ``evaluate``)."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(rc)


def main(argv=None) -> int:
    entry = argv is None and _entry_point()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = next((a for a in argv if not a.startswith("-")), "")
    import gc

    collecting = gc.isenabled()
    gc.disable()  # the imports of torch and Pyro make ~1e6 objects, none of them garbage
    try:
        parser = build_parser(only=command)
    finally:
        if entry:  # the program's own process: later collections need not walk the imports
            gc.freeze()
        if collecting:
            gc.enable()
    args = parser.parse_args(argv)
    rc = _main(args, argv)
    single = int(os.environ.get("WORLD_SIZE", 1)) == 1 and (getattr(args, "nproc", None)
                                                              or 1) == 1
    if entry and args._fast_exit and single:
        exit_now(rc)  # commands that opt in (FAST_EXIT), in one process
    return rc


def _main(args, argv) -> int:
    _quiet_and_one_line(args.command)
    from ppl_vae.io.provenance import clear

    clear()  # each command declares the checkpoint it reads (a notebook may call main often)
    try:
        if hasattr(args, "nproc"):  # a command that runs distributed (torchrun or --nproc N)
            from ppl_vae.training.distributed import run_command

            return int(run_command(args, argv, args._run) or 0)
        return int(args._run(args) or 0)
    except PplVaeError as exc:
        worker = (f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", 1)) > 1
                  and "RANK" in os.environ else "")
        print(f"ppl-vae {args.command}: error: {worker}{exc}", file=sys.stderr)
        return 1 if isinstance(exc, DistributedError) else 2


_PLAIN_FORMATWARNING = __import__("warnings").formatwarning


def _quiet_and_one_line(command: str) -> None:
    """Pyro's INFO lines (``Guessed max_plate_nesting = 2``) silenced; a
    :class:`~ppl_vae.errors.PplVaeWarning` printed as one ``ppl-vae CMD: warning: ...`` line."""
    import logging
    import warnings

    from ppl_vae.errors import PplVaeWarning

    logging.getLogger("pyro").setLevel(logging.WARNING)
    plain = _PLAIN_FORMATWARNING

    def formatwarning(message, category, filename, lineno, line=None):
        if issubclass(category, PplVaeWarning):
            return f"ppl-vae {command}: warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
