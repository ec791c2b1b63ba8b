"""One module per ``ppl-vae`` subcommand (NAME, HELP, add_arguments(parser), run(args)); the
options several commands share are defined once, in :mod:`ppl_vae.commands.options`."""
