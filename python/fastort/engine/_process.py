"""Engines across processes: pickling by reconstruction, and what an engine
inherited through ``fork()`` does (it refuses to run, with a clear error:
onnxruntime's thread pools do not survive a fork, so running it could hang).
"""

from __future__ import annotations

import os
from typing import Any, List, Union

__all__ = ["pickle_source", "inherited_note", "disown"]

# Native engines inherited through fork(): never destroyed in the child (their
# destructors would join threads that exist only in the parent).
_inherited: List[Any] = []


def pickle_source(model: Any) -> Union[str, bytes]:
    """What a pickled engine carries to rebuild itself: the path of a model
    file or package (its weights are read again there, not sent), else the
    serialized model bytes."""
    if isinstance(model, (str, os.PathLike)):
        return os.path.abspath(os.fspath(model))
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    serialize = getattr(model, "SerializeToString", None)
    if serialize is None:
        raise TypeError(f"cannot pickle an engine of a {type(model).__name__} model")
    data: bytes = serialize()
    return data


def inherited_note(source: str, parent: int) -> str:
    """The engine's description in a forked child, for EngineClosedError."""
    return (f"{source} [inherited through fork() from process {parent}: onnxruntime's threads do not survive "
            "a fork; open an engine in each process (pickle.dumps(engine) sends one that rebuilds itself there, "
            "e.g. as a ProcessPoolExecutor initializer argument) or use the 'spawn' or 'forkserver' start method]")


def disown(core: Any) -> None:
    """Keeps a native engine inherited through fork() alive forever, unused."""
    if core is not None:
        _inherited.append(core)
