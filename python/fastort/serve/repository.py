"""The model repository: which models a folder holds, and the engines serving them.

Layout (Triton's, with fastort packages as well as ``.onnx`` files)::

    repo/
      mlp/                  a fastort package (fastort.json): version 1
      cnn/1/model.onnx      numbered versions: the highest is served
      cnn/2/                ... a version may also be a package
      tiny/model.onnx       one .onnx file in the folder: version 1
      other.onnx            a file at the top: model "other", version 1

``fastort serve model.onnx`` or ``fastort serve PACKAGE_DIR`` serves that one model.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from fastort.engine import Engine
from fastort.errors import FastortError, ModelLoadError
from fastort.engine.manifest import MANIFEST, is_package, read_manifest

from .config import ServeConfig


class ModelNotFound(LookupError):
    """No such model (or version) in the repository."""


@dataclass
class ModelSource:
    """Where a model of the repository lives on disk."""

    name: str
    versions: Dict[str, str]  # version -> path of an .onnx file or a package folder

    @property
    def latest(self) -> str:
        return max(self.versions, key=int)


@dataclass
class ServedModel:
    """A loaded model: its engine and what the protocol says about it."""

    name: str
    version: str
    path: str
    engine: Engine
    max_batch_size: int  # 0 when the engine does not batch (Triton's convention)
    max_delay_us: int
    platform: str = "onnxruntime_onnx"
    loaded_at: float = field(default_factory=time.time)
    # protocol-level statistics (Triton's statistics extension)
    success: int = 0
    failure: int = 0
    inference_count: int = 0
    success_ns: int = 0
    failure_ns: int = 0
    compute_input_ns: int = 0
    queue_ns: int = 0  # waiting in the engine's queue
    compute_infer_ns: int = 0  # running in the engine
    compute_output_ns: int = 0
    last_inference_ms: int = 0
    pending: int = 0
    failure_reasons: Dict[str, int] = field(default_factory=dict)  # Triton's reason label -> count

    @property
    def inputs(self) -> Dict[str, Any]:
        return {s.name: s for s in self.engine.inputs}

    @property
    def outputs(self) -> Dict[str, Any]:
        return {s.name: s for s in self.engine.outputs}


def _find_onnx(folder: str) -> Optional[str]:
    """The model of a folder: a package, ``model.onnx``, or its only ``.onnx`` file."""
    if is_package(folder):
        return folder
    if os.path.isfile(os.path.join(folder, "model.onnx")):
        return os.path.join(folder, "model.onnx")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".onnx"))
    return os.path.join(folder, files[0]) if len(files) == 1 else None


def scan(root: str) -> Dict[str, ModelSource]:
    """The models under ``root`` (or the one model that ``root`` is)."""
    root = os.path.abspath(root)
    if not os.path.exists(root):
        raise ModelLoadError(f"model repository {root} does not exist")
    if os.path.isfile(root):
        name = os.path.splitext(os.path.basename(root))[0]
        return {name: ModelSource(name, {"1": root})}
    if os.path.isfile(os.path.join(root, MANIFEST)):
        name = os.path.basename(root.rstrip(os.sep))
        return {name: ModelSource(name, {"1": root})}
    found: Dict[str, ModelSource] = {}
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry.startswith("."):
            continue
        if os.path.isfile(path) and entry.endswith(".onnx"):
            name = entry[: -len(".onnx")]
            found[name] = ModelSource(name, {"1": path})
        elif os.path.isdir(path):
            versions = {d: os.path.join(path, d) for d in os.listdir(path)
                        if d.isdigit() and os.path.isdir(os.path.join(path, d))}
            resolved = {v: m for v, m in ((v, _find_onnx(p)) for v, p in versions.items()) if m}
            if resolved:
                found[entry] = ModelSource(entry, resolved)
            else:
                model = _find_onnx(path)
                if model is not None:
                    found[entry] = ModelSource(entry, {"1": model})
    return found


class Repository:
    """The models of a repository folder and their engines; thread-safe
    load/unload (Triton's model repository extension)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._models: Dict[str, ServedModel] = {}
        self._errors: Dict[str, str] = {}
        self._sources: Dict[str, ModelSource] = scan(config.model_repository)

    # -- lookups (event loop; no locking needed for dict reads) ---------------

    def get(self, name: str, version: str = "") -> ServedModel:
        model = self._models.get(name)
        if model is None:
            if name in self._sources:
                reason = self._errors.get(name, "not loaded")
                raise ModelNotFound(f"model '{name}' is not ready: {reason}")
            raise ModelNotFound(f"unknown model '{name}'" + self._known())
        if version and version != model.version:
            raise ModelNotFound(f"model '{name}' has no ready version '{version}' (serving version {model.version})")
        return model

    def _known(self) -> str:
        names = sorted(self._models)
        return f"; models: {', '.join(names)}" if names else "; no models are loaded"

    def loaded(self) -> List[ServedModel]:
        return list(self._models.values())

    def index(self) -> List[Dict[str, str]]:
        """Every model of the folder with its state (repository index extension)."""
        out = []
        for name in sorted(set(self._sources) | set(self._models)):
            model = self._models.get(name)
            if model is not None:
                out.append({"name": name, "version": model.version, "state": "READY", "reason": ""})
            else:
                source = self._sources.get(name)
                out.append({"name": name, "version": source.latest if source else "",
                            "state": "UNAVAILABLE", "reason": self._errors.get(name, "unloaded")})
        return out

    # -- load / unload (blocking: call from a thread) ---------------------------

    def load_all(self) -> None:
        for name in sorted(self._sources):
            try:
                self.load(name)
            except FastortError as e:
                self._errors[name] = str(e)

    def load(self, name: str) -> ServedModel:
        """(Re)load ``name`` from disk, rescanning the folder first."""
        sources = scan(self.config.model_repository)
        with self._lock:
            self._sources = sources
        source = sources.get(name)
        if source is None:
            raise ModelNotFound(f"model '{name}' is not in the repository {self.config.model_repository}")
        version = source.latest
        path = source.versions[version]
        try:
            engine, max_batch, delay = self._open(path)
        except FastortError as e:
            self._errors[name] = str(e)
            raise
        model = ServedModel(name, version, path, engine, max_batch, delay)
        with self._lock:
            old = self._models.get(name)
            self._models[name] = model
            self._errors.pop(name, None)
        if old is not None:
            old.engine.close()  # drains what the old version accepted
        return model

    def unload(self, name: str) -> None:
        with self._lock:
            model = self._models.pop(name, None)
            if model is None:
                raise ModelNotFound(f"model '{name}' is not loaded")
            self._errors[name] = "unloaded"
        model.engine.close()

    def close(self) -> None:
        """Drain and close every engine."""
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for model in models:
            model.engine.close()

    def _open(self, path: str) -> Tuple[Engine, int, int]:
        kwargs = self.config.engine.as_kwargs()
        manifest_batching = False
        if is_package(path):
            runtime = read_manifest(path).get("runtime", {})
            manifest_batching = "max_batch_size" in runtime
        if not manifest_batching:
            kwargs.setdefault("max_batch_size", self.config.default_max_batch_size)
        engine = Engine(path, **kwargs)
        if not engine.batching:
            return engine, 0, 0
        batch = engine.batch_config
        assert batch is not None
        return engine, batch.max_batch_size, batch.max_delay_us
