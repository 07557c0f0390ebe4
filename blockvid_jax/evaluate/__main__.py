"""Entry point: `python -m blockvid_jax.evaluate --videos DIR --out DIR ...` (see `cli`)."""

import sys

from blockvid_jax.evaluate.cli import main

if __name__ == "__main__":
  sys.exit(main())
