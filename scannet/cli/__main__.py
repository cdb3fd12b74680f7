"""``python -m scannet.cli``: the ``scannet`` command."""

import sys

from scannet.cli import main

if __name__ == "__main__":
    sys.exit(main())
