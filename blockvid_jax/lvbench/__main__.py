"""Entry point: `python -m blockvid_jax.lvbench {generate,report} ...` (see `cli`)."""

import sys

from blockvid_jax.lvbench.cli import main

if __name__ == "__main__":
  sys.exit(main())
