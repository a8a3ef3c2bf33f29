"""Reading model packages: a directory with the ONNX file(s) and a ``fastort.json``
manifest that says what the model takes and gives, how it was made, how well it
was checked, the sha256 of every file, and how to serve it.

>>> model_path, engine_kwargs = load_package("models/cnn")   # hashes verified
>>> engine = fastort.Engine(model_path, **engine_kwargs)      # or Engine("models/cnn")

A file whose hash does not match (tampered, truncated, replaced) or that is
missing makes :func:`load_package` raise :class:`PackageIntegrityError`.
Writing packages is :func:`fastort.prepare.package.package`; this module is
what the engine (and everything above it) needs to read one.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Tuple, Union

from ..errors import ModelNotFoundError, PackageError, PackageIntegrityError

__all__ = ["MANIFEST", "FORMAT", "FORMAT_VERSION", "MODEL_FILE", "ENGINE_KEYS", "is_package", "read_manifest",
           "verify_package", "load_package", "summary", "sha256_of"]

MANIFEST = "fastort.json"
FORMAT = "fastort-model-package"
FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"

#: Engine keyword arguments a manifest's ``runtime`` section may set.
ENGINE_KEYS = ("providers", "replicas", "intra_op_threads", "inter_op_threads", "graph_optimization",
               "execution_mode", "session_config", "max_batch_size", "max_delay_us", "max_queue", "batch_axis",
               "use_global_thread_pool", "precision", "device_policy")


def sha256_of(path: str) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_package(path: Union[str, "os.PathLike[str]"]) -> bool:
    """Whether ``path`` is a directory with a manifest (or a manifest file)."""
    path = os.fspath(path)
    return (os.path.isdir(path) and os.path.isfile(os.path.join(path, MANIFEST))) or (
        os.path.isfile(path) and os.path.basename(path) == MANIFEST)


def _package_dir(path: Union[str, "os.PathLike[str]"]) -> str:
    path = os.fspath(path)
    if os.path.isfile(path) and os.path.basename(path) == MANIFEST:
        return os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path):
        raise ModelNotFoundError(f"model package not found: {path}")
    if not os.path.isdir(path):
        raise PackageError(f"{path} is not a model package directory")
    if not os.path.isfile(os.path.join(path, MANIFEST)):
        raise PackageError(f"{path} is a directory without {MANIFEST}: not a fastort model package "
                           "(make one with fastort.package or `fastort prepare`)")
    return path


def read_manifest(path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
    """The manifest of the package at ``path`` (checked for form, not hashes)."""
    folder = _package_dir(path)
    mpath = os.path.join(folder, MANIFEST)
    try:
        with open(mpath, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackageError(f"cannot read {mpath}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{mpath} is not a fastort package manifest (format is not {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PackageError(f"{mpath}: package format version {version!r} is newer than this fastort reads "
                           f"({FORMAT_VERSION}); upgrade fastort")
    files = manifest.get("files")
    model = manifest.get("model")
    if not isinstance(files, dict) or not files or not isinstance(model, str):
        raise PackageError(f"{mpath}: the manifest lists no files or no model")
    if model not in files:
        raise PackageIntegrityError(f"{mpath}: the model file {model!r} has no hash in the manifest")
    for fname, entry in files.items():
        if (not isinstance(fname, str) or os.path.isabs(fname) or fname != os.path.basename(fname)
                or fname in ("", ".", "..")):
            raise PackageError(f"{mpath}: file name {fname!r} is not a plain name inside the package")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise PackageError(f"{mpath}: file {fname!r} has no sha256")
    return manifest


def verify_package(path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
    """Checks every file of the package against its size and sha256; returns
    the manifest. A mismatch or a missing file is a PackageIntegrityError."""
    folder = _package_dir(path)
    manifest = read_manifest(folder)
    for fname, entry in manifest["files"].items():
        full = os.path.join(folder, fname)
        if not os.path.isfile(full):
            raise PackageIntegrityError(f"package {folder}: file {fname!r} listed in {MANIFEST} is missing")
        size = os.path.getsize(full)
        if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
            raise PackageIntegrityError(
                f"package {folder}: {fname!r} is {size} bytes, the manifest says {entry['bytes']}: "
                "the file was changed or replaced after packaging; refusing to load it")
        digest = sha256_of(full)
        if digest != entry["sha256"]:
            raise PackageIntegrityError(
                f"package {folder}: {fname!r} has sha256 {digest}, the manifest says {entry['sha256']}: "
                "the file was changed or replaced after packaging; refusing to load it")
    return manifest


def load_package(path: Union[str, "os.PathLike[str]"]) -> Tuple[str, Dict[str, Any]]:
    """Verifies the package at ``path`` (a directory, or its ``fastort.json``)
    and returns ``(model_path, engine_kwargs)``: the ONNX file to load and the
    recommended :class:`fastort.Engine` keyword arguments."""
    folder = _package_dir(path)
    manifest = verify_package(folder)
    runtime = manifest.get("runtime") or {}
    if not isinstance(runtime, dict):
        raise PackageError(f"package {folder}: 'runtime' in {MANIFEST} must be an object")
    _warn_if_tuned_elsewhere(folder, manifest)
    kwargs = {k: runtime[k] for k in ENGINE_KEYS if k in runtime and runtime[k] is not None}
    if "providers" in kwargs and isinstance(kwargs["providers"], list):
        # [name, {options}] pairs come back from JSON as lists: Engine takes them as tuples
        kwargs["providers"] = tuple(tuple(p) if isinstance(p, list) else p for p in kwargs["providers"])
    return os.path.join(folder, manifest["model"]), kwargs


def _warn_if_tuned_elsewhere(folder: str, manifest: Dict[str, Any]) -> None:
    """Settings tuned by ``fastort tune`` hold for the CPU they were measured
    on: warn when this machine's CPU model or core count differs."""
    extra = manifest.get("extra")
    tuned = extra.get("tuned_on") if isinstance(extra, dict) else None
    if not isinstance(tuned, dict):
        return
    here: Dict[str, Any] = {"cpu": "unknown", "cores": os.cpu_count()}
    try:
        here["cores"] = len(os.sched_getaffinity(0))
        with open("/proc/cpuinfo") as f:
            here["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown")
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pass
    diffs = [f"{k} {tuned.get(k)!r} there, {here.get(k)!r} here" for k in ("cpu", "cores")
             if tuned.get(k) is not None and tuned.get(k) != here.get(k)]
    if diffs:
        import warnings

        warnings.warn(f"fastort: package {folder} was tuned on another machine ({'; '.join(diffs)}): its settings "
                      "may not be the fastest here; re-run `fastort tune` on this machine", RuntimeWarning,
                      stacklevel=4)


def summary(path: Union[str, "os.PathLike[str]"]) -> str:
    """A few readable lines about a package (verified)."""
    manifest = verify_package(path)
    lines = [f"package   {manifest.get('name')} ({_package_dir(path)})",
             f"created   {manifest.get('created')} with fastort {manifest.get('tools', {}).get('fastort', '?')}"]
    for kind in ("inputs", "outputs"):
        specs: List[str] = []
        for s in manifest.get(kind, []):
            dims = ", ".join("?" if d is None else str(d) for d in (s.get("shape") or []))
            specs.append(f"{s['name']}: {s.get('dtype') or s.get('type')}[{dims}]" if s.get("shape") is not None
                         else f"{s['name']}: {s.get('type')}")
        lines.append(f"{kind:<9} " + ", ".join(specs))
    for step in manifest.get("provenance", []):
        v = step.get("validation") or {}
        err = f", max abs err {v.get('max_abs_error', 0):.3g}" if v else ""
        lines.append(f"step      {step['step']}{err}")
    lines.append("runtime   " + json.dumps(manifest.get("runtime", {})))
    lines.append("files     " + ", ".join(f"{k} ({v.get('bytes')} B, sha256 ok)" for k, v in manifest["files"].items()))
    return "\n".join(lines)
