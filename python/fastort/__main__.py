"""``python -m fastort ...``: the ``fastort`` command line."""

import sys

from .cli import main

sys.exit(main())
