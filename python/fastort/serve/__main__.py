"""``python -m fastort.serve MODEL_REPO ...`` (same as ``fastort serve``)."""

import sys

from .cli import main

sys.exit(main())
