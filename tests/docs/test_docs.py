"""Every ```python block of README.md and docs/*.md runs.

The blocks of one file run in order in one namespace, in a temporary working
folder that holds what the text assumes: ``model.onnx`` (x float32[batch, 4]
-> y float32[batch, 3]; docs/GPU.md: x float32[batch, 3, 224, 224] -> y), and
the names the prose uses for the reader's own data: ``x`` (float32 rows for
model.onnx), ``x_calib``, ``big_array``, ``torch_module`` / ``model`` (a torch
module taking x, when torch is installed). ``>>>`` blocks run their statements;
their printed output is illustrative and not compared.

Markers, on the line right before a block's fence (anything else there is prose):

    <!-- no-test: REASON -->              never run (counted: NO_TEST below must be raised to add one)
    <!-- doc-test: requires MOD [MOD] --> skipped, naming the module, when a module is not installed
    <!-- doc-test: gpu -->                skipped unless onnxruntime's CUDA provider is usable

A block that raises ``fastort.MissingDependencyError`` (an optional extra is
not installed), or fails to import one of OPTIONAL_MODULES, skips the rest of
its file with that reason, so a doc written for an extra (ray, tritonclient,
an onnxruntime plugin...) runs wherever the extra is installed.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

#: How many ``no-test`` blocks each file may have. Raising a number is a
#: reviewed change; a file not listed may have none.
NO_TEST: Dict[str, int] = {"docs/PREPARE.md": 2, "docs/SCALE_OUT.md": 2, "docs/SERVE.md": 1, "docs/TUNE.md": 1}

#: Top-level modules of fastort's optional extras and integrations.
OPTIONAL_MODULES = {"torch", "torchvision", "onnxscript", "tensorflow", "tf2onnx", "keras", "sklearn", "skl2onnx",
                    "onnxslim", "onnxoptimizer", "sympy", "ray", "tritonclient", "grpc", "openvino",
                    "onnxruntime_openvino", "cupy", "matplotlib", "ml_dtypes", "fastapi", "uvicorn", "httpx"}

_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
_MARKER = re.compile(r"^<!--\s*(no-test:.*?|doc-test:.*?)\s*-->\s*$")


@dataclass
class Block:
    file: str
    line: int
    source: str
    marker: Optional[str] = None
    requires: List[str] = field(default_factory=list)
    gpu: bool = False

    @property
    def no_test(self) -> Optional[str]:
        if self.marker and self.marker.startswith("no-test:"):
            return self.marker[len("no-test:"):].strip()
        return None


def python_blocks(path: Path) -> List[Block]:
    """The ```python blocks of a markdown file, with the marker before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = str(path.relative_to(ROOT))
    blocks: List[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i].strip())
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        if lang not in ("python", "py", "pycon"):
            continue
        prev = lines[start - 1].strip() if start > 0 else ""
        marker = _MARKER.match(prev)
        block = Block(rel, start + 1, textwrap.dedent("\n".join(body)), marker.group(1) if marker else None)
        if block.marker and block.marker.startswith("doc-test:"):
            words = block.marker[len("doc-test:"):].split()
            if words[:1] == ["requires"] and len(words) > 1:
                block.requires = words[1:]
            elif words == ["gpu"]:
                block.gpu = True
            else:
                raise ValueError(f"{rel}:{start}: unknown marker {block.marker!r} "
                                 "(doc-test: requires MOD..., doc-test: gpu, no-test: REASON)")
        blocks.append(block)
    return blocks


def _statements(source: str) -> str:
    """A ``>>>`` session's statements (its output lines dropped); other code as it is."""
    if not source.lstrip().startswith(">>>"):
        return source
    out = []
    for line in source.splitlines():
        if line.startswith(">>> ") or line == ">>>":
            out.append(line[4:])
        elif line.startswith("... ") or line == "...":
            out.append(line[4:])
    return "\n".join(out)


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "doc_model",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _image_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "doc_image_model",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 224, 224])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 224, 224])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


#: model.onnx per file, where it is not the 4 -> 3 MatMul.
MODELS = {"docs/GPU.md": _image_model}


def _namespace(rel: str) -> Dict[str, Any]:
    import fastort

    rng = np.random.default_rng(0)
    ns: Dict[str, Any] = {"__name__": "__doc_test__", "fastort": fastort, "np": np,
                          "x": rng.standard_normal((8, 4)).astype(np.float32),
                          "x_calib": rng.standard_normal((64, 4)).astype(np.float32),
                          "big_array": rng.standard_normal((1000, 4)).astype(np.float32)}
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(0)
        ns["torch_module"] = ns["model"] = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                                               torch.nn.Linear(8, 3)).eval()
    return ns


def _cuda_usable() -> bool:
    import fastort

    status = fastort.runtime_info().get("provider_status", {}).get("CUDAExecutionProvider", {})
    return bool(status.get("available"))


def _run(source: str, ns: Dict[str, Any], where: str) -> None:
    code = compile(_statements(source), where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, ns)  # noqa: S307 - the repository's own documentation
    if inspect.iscoroutine(result):
        asyncio.run(result)


ALL = {str(p.relative_to(ROOT)): python_blocks(p) for p in DOCS}


def test_docs_found() -> None:
    assert "README.md" in ALL and any(f.startswith("docs/") for f in ALL)
    assert sum(len(b) for b in ALL.values()) >= 5


@pytest.mark.parametrize("rel", sorted(ALL))
def test_no_test_blocks_are_counted(rel: str) -> None:
    skipped = [f"line {b.line}: {b.no_test}" for b in ALL[rel] if b.no_test is not None]
    assert len(skipped) == NO_TEST.get(rel, 0), (
        f"{rel} has {len(skipped)} <!-- no-test --> block(s), NO_TEST allows {NO_TEST.get(rel, 0)}: "
        f"make them run (the fixtures are in {Path(__file__).name}) or raise the count in review:\n"
        + "\n".join(skipped))


@pytest.mark.parametrize("rel", sorted(rel for rel, blocks in ALL.items() if blocks))
def test_python_blocks_run(rel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    onnx.save(MODELS.get(rel, _mlp)(), str(tmp_path / "model.onnx"))
    ns = _namespace(rel)
    skipped = []
    ran = 0
    try:
        for block in ALL[rel]:
            if block.no_test is not None:
                continue
            missing = [m for m in block.requires if importlib.util.find_spec(m) is None]
            if missing:
                skipped.append(f"line {block.line} needs {', '.join(missing)}")
                continue
            if block.gpu and not _cuda_usable():
                skipped.append(f"line {block.line} needs a usable CUDA provider")
                continue
            try:
                _run(block.source, ns, f"{rel}:{block.line}")
            except ModuleNotFoundError as e:
                if (e.name or "").split(".")[0] not in OPTIONAL_MODULES:
                    raise AssertionError(f"{rel}, block at line {block.line}: {e}") from e
                skipped.append(f"line {block.line} and after need {e.name} (not installed)")
                break
            except Exception as e:
                from fastort.errors import MissingDependencyError

                if isinstance(e, MissingDependencyError):
                    skipped.append(f"line {block.line} and after: {e}")
                    break
                raise AssertionError(f"{rel}, block at line {block.line} failed: {type(e).__name__}: {e}\n"
                                     f"{block.source}") from e
            ran += 1
    finally:
        engine = ns.get("engine")
        if engine is not None and hasattr(engine, "close"):
            engine.close()
    if skipped and not ran:
        pytest.skip("; ".join(skipped))
    if skipped:
        print(f"{rel}: skipped " + "; ".join(skipped))
