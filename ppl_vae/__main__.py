import sys

from ppl_vae.commands.cli import main

sys.exit(main())
