"""The ``fastort`` command line.

    fastort info [MODEL] [--json]   what a model takes and gives (or, alone, the runtime)
    fastort bench [MODEL] ...       fastort vs plain onnxruntime, side by side

Model preparation (docs/PREPARE.md):
    fastort convert MODEL -o OUT.onnx ...    PyTorch (TorchScript/exported program), scikit-learn, TensorFlow to ONNX
    fastort optimize MODEL -o OUT.onnx ...   graph optimization and simplification, fixed dims, float16
    fastort quantize MODEL -o OUT.onnx ...   dynamic or static int8
    fastort validate REFERENCE CANDIDATE ... compare outputs within tolerances
    fastort package MODEL -o DIR ...         a model directory with a hashed manifest
    fastort prepare MODEL -o DIR ...         all of the above, with a before/after table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from .engine import Engine, IOSpec
from .errors import FastortError
from ._runtime import runtime_info


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

    from .package import is_package, load_package

    if is_package(path):  # a model package: describe its model (hashes checked)
        path = load_package(path)[0]
    with Engine(path, providers=providers) as engine:  # first: it names what is wrong with the file
        proto = onnx.load(path, load_external_data=False)

        def spec(s: IOSpec) -> Dict[str, Any]:
            return {
                "name": s.name,
                "type": s.type,
                "dtype": None if s.dtype is None else str(s.dtype),
                "shape": None if s.shape is None else list(s.shape),
            }

        return {
            "path": path,
            "file_bytes": os.path.getsize(path),
            "external_data_bytes": _external_data_bytes(path, proto),
            "ir_version": proto.ir_version,
            "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "graph": proto.graph.name,
            "nodes": len(proto.graph.node),
            "inputs": [spec(s) for s in engine.inputs],
            "outputs": [spec(s) for s in engine.outputs],
            "providers": list(engine.providers),
            "available_providers": runtime_info()["providers"],
        }


def _format_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _print_info(info: Dict[str, Any]) -> None:
    size = _format_size(info["file_bytes"])
    if info["external_data_bytes"]:
        size += f" + {_format_size(info['external_data_bytes'])} external data"
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


def _info(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="fastort info", description="Describe a model, or the runtime.")
    parser.add_argument("model", nargs="?", help="an .onnx file or a model package (omit to describe the runtime)")
    parser.add_argument("--providers", default="cpu", help="comma-separated providers to load with (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.model is None:
        info = runtime_info()
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print(f"onnxruntime {info['version']} (fastort compiled against C API {info['api_version']})")
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``fastort`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: fastort {info,bench,convert,optimize,quantize,validate,package,prepare} ... "
             "(fastort COMMAND --help for details)")
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip() if __doc__ else usage)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    try:
        if command == "info":
            return _info(rest)
        if command == "bench":
            from .benchmark import main as bench_main

            return bench_main(rest)
        from ._prepare_cli import COMMANDS

        if command in COMMANDS:
            return COMMANDS[command](rest)
    except FastortError as e:
        print(f"fastort {command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"fastort: unknown command {command!r}\n{usage}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
