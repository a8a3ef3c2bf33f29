"""``fastort tune``: the fastest configuration that meets your targets (python/fastort/tune/, docs/TUNE.md)."""

from __future__ import annotations

from ..tune.cli import add_parser

__all__ = ["add_parser"]
