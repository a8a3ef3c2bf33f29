"""Error messages in the command line's words: the library's messages name its
Python keywords (``overwrite=True``, ``calibration=...``, ``inputs=``); on the
command line they name the flags (``--overwrite``, ``--calibration FILE``,
``--inputs FILE``)."""

from __future__ import annotations

import re
from typing import List, Tuple

__all__ = ["cli_message", "KEYWORD_FLAGS"]

#: (pattern, replacement), applied in order: Python keyword phrases -> CLI flags.
KEYWORD_FLAGS: List[Tuple[str, str]] = [
    # the free-dims advice of fastort.prepare.common.SYNTHETIC_HELP
    (r"give inputs= \(real data\), or the free dims' sizes with dims= \(e\.g\. dims=\{'height': 224\} or "
     r"\{'x:2': 224\}\), or allow_synthetic=True",
     "give --inputs FILE.npz (real data), or the free dims' sizes with --dims (e.g. --dims height=224 or "
     "--dims x:2=224), or --allow-synthetic-dims"),
    (r"\ballow_synthetic=True\b", "--allow-synthetic-dims"),
    (r"\b(?:pass )?overwrite=True\b", "--overwrite"),
    (r"\b(?:pass )?force=True\b", "--force"),
    (r"\bcalibration=\.\.\.", "--calibration FILE"),
    (r"\bcalibration=", "--calibration "),
    (r"\bexample_inputs\b", "--inputs FILE or --input-shape"),
    (r"\binputs=", "--inputs FILE"),
    (r"\bdims=", "--dims "),
    (r"\bfixed_dims=", "--fix-dim "),
    (r"\bmax_batch_size=", "--max-batch-size "),
]


def cli_message(text: str) -> str:
    """``text`` with the library's keyword phrases replaced by the CLI's flags."""
    for pattern, replacement in KEYWORD_FLAGS:
        text = re.sub(pattern, replacement, text)
    return text
