"""The serve extra's libraries, checked once with a message that says what to install."""

from __future__ import annotations

import importlib.util

from fastort.errors import MissingDependencyError

from .config import EXTRA

#: import name -> distribution, for the message
MODULES = {"uvicorn": "uvicorn", "grpc": "grpcio", "tritonclient.grpc": "tritonclient[grpc]",
           "prometheus_client": "prometheus-client", "ml_dtypes": "ml_dtypes"}


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ModuleNotFoundError, ValueError):  # a parent package is missing, or blocked
        return True


def require() -> None:
    """Raises MissingDependencyError naming the extra when a library is missing."""
    missing = [dist for module, dist in MODULES.items() if _missing(module)]
    if missing:
        raise MissingDependencyError(f"fastort serve needs {', '.join(missing)}: pip install 'fastort[{EXTRA}]'")
