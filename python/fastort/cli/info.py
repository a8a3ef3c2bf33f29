"""``fastort info [MODEL] [--json]``: what a model takes and gives (or, alone, the runtime)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, Sequence

from .._format import format_bytes
from ..engine import Engine
from ..engine.manifest import is_package, load_package
from ..runtime import runtime_info

__all__ = ["add_parser", "run", "describe_model"]


def _external_data_bytes(model_path: str, proto: Any) -> int:
    """Size of the external-data files a model refers to (0 when none)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    base = os.path.dirname(os.path.abspath(model_path))
    files = set()
    for tensor in _get_all_tensors(proto):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    files.add(os.path.join(base, entry.value))
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f))


def describe_model(path: str, providers: Sequence[str] = ("cpu",)) -> Dict[str, Any]:
    """A JSON-able description of the model file at ``path``."""
    import onnx

    if is_package(path):  # a model package: describe its model (hashes checked)
        path = load_package(path)[0]
    with Engine(path, providers=providers) as engine:  # first: it names what is wrong with the file
        proto = onnx.load(path, load_external_data=False)
        return {
            "path": path,
            "file_bytes": os.path.getsize(path),
            "external_data_bytes": _external_data_bytes(path, proto),
            "ir_version": proto.ir_version,
            "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "graph": proto.graph.name,
            "nodes": len(proto.graph.node),
            "inputs": [s.to_dict() for s in engine.inputs],
            "outputs": [s.to_dict() for s in engine.outputs],
            "providers": list(engine.providers),
            "available_providers": runtime_info()["providers"],
        }


def _print_info(info: Dict[str, Any]) -> None:
    size = format_bytes(info["file_bytes"])
    if info["external_data_bytes"]:
        size += f" + {format_bytes(info['external_data_bytes'])} external data"
    print(f"model      {info['path']}")
    print(f"size       {size}")
    print(f"producer   {info['producer'] or '-'}   ir_version {info['ir_version']}")
    print("opsets     " + ", ".join(f"{d} {v}" for d, v in info["opsets"].items()))
    print(f"graph      {info['graph'] or '-'} ({info['nodes']} nodes)")
    for title in ("inputs", "outputs"):
        print(f"{title}:")
        for s in info[title]:
            if s["shape"] is None:
                print(f"  {s['name']}: {s['type']}")
            else:
                dims = ", ".join("?" if d is None else str(d) for d in s["shape"])
                print(f"  {s['name']}: {s['dtype']}[{dims}]")
    print("providers  " + ", ".join(info["providers"]) + "   (available: " + ", ".join(info["available_providers"]) + ")")


def _print_devices(info: Dict[str, Any]) -> None:
    """Plugin EP support, libraries and EP devices (fastort.devices)."""
    plugins = info["plugin_eps"]
    print(f"C API       {info['api_version']} in use (headers: {info['api_version_compiled']}); plugin EPs: "
          + ("yes" if plugins["available"] else "no (" + plugins["reason"] + ")"))
    for lib in info.get("plugin_libraries", []):
        state = "registered" if lib["registered"] else "not registered: " + lib["error"]
        print(f"plugin      {lib['name']} ({lib['source']}): {', '.join(lib['eps']) or '-'}; {state}")
    for d in info.get("devices", []):
        extra = f" ov_device={d['ov_device']}" if d["ov_device"] else ""
        print(f"device      {d['ep']}: {d['device_type']} {d['vendor']} "
              f"(vendor 0x{d['vendor_id']:04x}, device 0x{d['device_id']:04x}){extra}")


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("info", help="what a model takes and gives (or, alone, the runtime)",
                                   description="Describe a model, or the runtime.")
    parser.add_argument("model", nargs="?", help="an .onnx file or a model package (omit to describe the runtime)")
    parser.add_argument("--providers", default="cpu", help="comma-separated providers to load with (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.model is None:
        info = runtime_info()
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print(f"onnxruntime {info['version']}")
            print(f"library     {info['library_path']}")
            print(f"providers   {', '.join(info['providers'])}")
            for name, status in info["provider_status"].items():
                print(f"  {name}: {'available' if status['available'] else 'unavailable: ' + status['reason']}")
            _print_devices(info)
        return 0
    info = describe_model(args.model, providers=args.providers.split(","))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0
