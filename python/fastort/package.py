"""Model packages: a directory with the ONNX file(s) and a ``fastort.json``
manifest that says what the model takes and gives, how it was made, how well it
was checked, the sha256 of every file, and how to serve it.

>>> from fastort.package import package, load_package
>>> package(result, "models/cnn", steps=[converted, optimized, quantized])
>>> model_path, engine_kwargs = load_package("models/cnn")   # hashes verified
>>> engine = fastort.Engine(model_path, **engine_kwargs)

A file whose hash does not match (tampered, truncated, replaced) or that is
missing makes :func:`load_package` raise :class:`PackageIntegrityError`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._prep import (
    StepResult,
    _jsonable,
    graph_inputs,
    graph_outputs,
    load_model,
    model_size,
    tool_versions,
)
from .errors import PackageError, PackageIntegrityError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from .validate import ValidationReport

__all__ = ["package", "load_package", "read_manifest", "verify_package", "is_package", "PackageError",
           "PackageIntegrityError", "MANIFEST", "FORMAT", "FORMAT_VERSION"]

MANIFEST = "fastort.json"
FORMAT = "fastort-model-package"
FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"

#: Engine keyword arguments a manifest's ``runtime`` section may set.
ENGINE_KEYS = ("providers", "replicas", "intra_op_threads", "inter_op_threads", "graph_optimization",
               "execution_mode", "session_config", "max_batch_size", "max_delay_us", "max_queue", "batch_axis")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _batchable(model: "onnx.ModelProto") -> Tuple[bool, str]:
    """Whether every input and output is a tensor with a free dim 0."""
    for kind, specs in (("input", graph_inputs(model)), ("output", graph_outputs(model))):
        for s in specs:
            if s.shape is None:
                return False, f"{kind} {s.name!r} is a {s.type}, not a tensor"
            if not s.shape or isinstance(s.shape[0], int):
                return False, f"{kind} {s.name!r} has no dynamic batch dim"
    return True, ""


def recommended_runtime(model: "onnx.ModelProto", target: str = "cpu", replicas: int = 1,
                        max_batch_size: Optional[int] = None, max_delay_us: int = 2000,
                        intra_op_threads: Optional[int] = None, precision: str = "f32") -> Dict[str, Any]:
    """Runtime settings for :class:`fastort.Engine`: providers for the target,
    replicas, and dynamic batching when the model has a dynamic batch dim
    (``max_batch_size`` None: 32 then; 0: off)."""
    providers = {"cuda": ["cuda", "cpu"], "openvino": ["openvino", "cpu"]}.get(target, ["cpu"])
    runtime: Dict[str, Any] = {"providers": providers, "replicas": int(replicas), "graph_optimization": "all"}
    if target == "openvino":  # precision is the deployer's choice, written down (docs/DEVICES.md)
        runtime["precision"] = precision
    if intra_op_threads is not None:
        runtime["intra_op_threads"] = int(intra_op_threads)
    ok, why = _batchable(model)
    if max_batch_size is None:
        max_batch_size = 32 if ok else 0
    if max_batch_size and ok:
        runtime["max_batch_size"] = int(max_batch_size)
        runtime["max_delay_us"] = int(max_delay_us)
    elif max_batch_size and not ok:
        raise PackageError(f"batching (max_batch_size={max_batch_size}) does not suit this model: {why}")
    else:
        runtime["batching_off_because"] = why or "max_batch_size=0"
    return runtime


def package(
    model: Any,
    outdir: Union[str, "os.PathLike[str]"],
    *,
    steps: Sequence[StepResult] = (),
    validation: "Optional[Sequence[ValidationReport]]" = None,
    target: str = "cpu",
    replicas: int = 1,
    max_batch_size: Optional[int] = None,
    max_delay_us: int = 2000,
    intra_op_threads: Optional[int] = None,
    runtime: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
    precision: str = "f32",
    description: str = "",
    source: Optional[str] = None,
    extra: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
) -> str:
    """Writes a model package into ``outdir`` and returns its path.

    Args:
        model: the final model (a path, bytes, ModelProto or step result).
        steps: the step results that made it, in order: their settings, tool
            versions, before/after numbers and validation reports go into the
            manifest's ``provenance``.
        validation: further validation reports (e.g. end to end).
        target: ``"cpu"``, ``"cuda"`` or ``"openvino"``: the recommended providers
            (``"openvino"`` also records the precision, f32 unless ``runtime`` says otherwise).
        replicas, max_batch_size, max_delay_us, intra_op_threads: recommended
            Engine settings (batching: on, 32 rows, when the model allows it).
        runtime: Engine keyword arguments that override the recommendation.
        name, description, source: for the manifest.
        extra: more JSON-able data kept under ``extra``.
        overwrite: replace an existing package in ``outdir``.

    A step result whose validation failed and was not forced is refused.
    """
    outdir = os.fspath(outdir)
    steps = list(steps)
    if isinstance(model, StepResult) and model not in steps:
        steps.append(model)
    for step in steps:
        if step.validation is not None and not step.validation.passed and not step.forced:
            raise PackageError(f"step {step.step!r} failed validation and was not forced: refusing to package it")
    proto = load_model(model, what="model to package")
    if os.path.exists(outdir):
        if not os.path.isdir(outdir):
            raise PackageError(f"{outdir} exists and is not a directory")
        if os.listdir(outdir):
            if not overwrite:
                raise PackageError(f"{outdir} is not empty: pass overwrite=True to replace the package in it")
            if not os.path.isfile(os.path.join(outdir, MANIFEST)):
                raise PackageError(f"{outdir} is not empty and holds no {MANIFEST}: refusing to overwrite "
                                   "a directory that is not a package")
            shutil.rmtree(outdir)
    os.makedirs(outdir, exist_ok=True)

    import onnx

    model_path = os.path.join(outdir, MODEL_FILE)
    large = model_size(proto) > 1_800_000_000
    onnx.save_model(proto, model_path, save_as_external_data=large, all_tensors_to_one_file=True,
                    location=MODEL_FILE + ".data" if large else None)
    files = {}
    for fname in sorted(os.listdir(outdir)):
        full = os.path.join(outdir, fname)
        if os.path.isfile(full) and fname != MANIFEST:
            files[fname] = {"sha256": _sha256(full), "bytes": os.path.getsize(full)}

    rt = recommended_runtime(proto, target, replicas, max_batch_size, max_delay_us, intra_op_threads, precision)
    if runtime:
        unknown = [k for k in runtime if k not in ENGINE_KEYS]
        if unknown:
            raise PackageError(f"runtime names unknown Engine settings {unknown}; known: {list(ENGINE_KEYS)}")
        rt.update(runtime)
        if rt.get("max_batch_size"):
            rt.pop("batching_off_because", None)
    manifest: Dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or os.path.basename(os.path.abspath(outdir)),
        "description": description,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "model": MODEL_FILE,
        "files": files,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        "inputs": [s.to_dict() for s in graph_inputs(proto)],
        "outputs": [s.to_dict() for s in graph_outputs(proto)],
        "provenance": [s.provenance() for s in steps],
        "validation": [r.to_dict() for r in (validation or [])],
        "runtime": rt,
        "tools": tool_versions(),
    }
    if extra:
        manifest["extra"] = _jsonable(dict(extra))
    tmp = os.path.join(outdir, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_jsonable(manifest), f, indent=2, allow_nan=True)
        f.write("\n")
    os.replace(tmp, os.path.join(outdir, MANIFEST))
    return outdir


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
        from .errors import ModelNotFoundError

        raise ModelNotFoundError(f"model package not found: {path}")
    if not os.path.isdir(path):
        raise PackageError(f"{path} is not a model package directory")
    if not os.path.isfile(os.path.join(path, MANIFEST)):
        raise PackageError(f"{path} is a directory without {MANIFEST}: not a fastort model package "
                           "(make one with fastort.package.package or `fastort prepare`)")
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
        digest = _sha256(full)
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
    kwargs = {k: runtime[k] for k in ENGINE_KEYS if k in runtime and runtime[k] is not None}
    if "providers" in kwargs and isinstance(kwargs["providers"], list):
        kwargs["providers"] = tuple(kwargs["providers"])
    return os.path.join(folder, manifest["model"]), kwargs


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
