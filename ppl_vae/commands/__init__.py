"""One module per ``ppl-vae`` subcommand (NAME, HELP, add_arguments(parser), run(args))."""


def add_checkpoint_argument(p) -> None:
    """``--checkpoint best|last`` for commands that load a run
    (:func:`ppl_vae.training.runs.load_run`)."""
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="best: the epoch with the best validation ELBO (best.pt; default, falls "
                        "back to checkpoint.pt); last: the last epoch (checkpoint.pt)")
