"""Writing model packages: a directory with the ONNX file(s) and a ``fastort.json``
manifest that says what the model takes and gives, how it was made, how well it
was checked, the sha256 of every file, and how to serve it.

>>> from fastort.prepare.package import package, load_package
>>> package(result, "models/cnn", steps=[converted, optimized, quantized])
>>> model_path, engine_kwargs = load_package("models/cnn")   # hashes verified
>>> engine = fastort.Engine(model_path, **engine_kwargs)     # or Engine("models/cnn")

Reading a package (the manifest's schema, hash checks, :func:`load_package`)
lives in :mod:`fastort.engine.manifest`, below both the engine and this
layer; its functions are re-exported here.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from ..engine.manifest import (
    ENGINE_KEYS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MODEL_FILE,
    is_package,
    load_package,
    read_manifest,
    sha256_of,
    summary,
    verify_package,
)
from ..errors import PackageError, PackageIntegrityError
from .common import (
    StepResult,
    _jsonable,
    graph_inputs,
    graph_outputs,
    load_model,
    model_size,
    tool_versions,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from .validate import ValidationReport

__all__ = ["package", "recommended_runtime", "load_package", "read_manifest", "verify_package", "is_package",
           "summary", "PackageError", "PackageIntegrityError", "MANIFEST", "FORMAT", "FORMAT_VERSION", "MODEL_FILE",
           "ENGINE_KEYS"]


def _batchable(model: "onnx.ModelProto", batch_axis: int = 0) -> Tuple[bool, str]:
    """Whether the core batches this model along ``batch_axis``: its own rule
    (every input and output a tensor with a dynamic dim there), and why not."""
    from .. import _core

    specs = [[(s.name, s.type, s.shape) for s in specs] for specs in (graph_inputs(model), graph_outputs(model))]
    return _core.batchability(specs[0], specs[1], batch_axis)


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
            files[fname] = {"sha256": sha256_of(full), "bytes": os.path.getsize(full)}

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


