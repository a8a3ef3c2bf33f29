"""The command line (the top layer): :func:`main` dispatches ``fastort COMMAND``
to the command groups :mod:`~fastort.cli.info`, :mod:`~fastort.cli.bench` and
:mod:`~fastort.cli.prepare` (:mod:`fastort.cli.dispatch`)."""

from __future__ import annotations

from .dispatch import main

__all__ = ["main"]
