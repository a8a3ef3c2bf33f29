"""``fastort serve``: the Open Inference Protocol server (python/fastort/serve/, docs/SERVE.md)."""

from __future__ import annotations

from ..serve.cli import add_parser

__all__ = ["add_parser"]
