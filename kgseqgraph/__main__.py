"""``python -m kgseqgraph``: see :mod:`kgseqgraph.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
