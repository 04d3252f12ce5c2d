"""``python -m toolkit``: the ``ws-toolkit`` command (see ``toolkit/_cli.py``)."""

import sys

from ._cli import main

sys.exit(main())
