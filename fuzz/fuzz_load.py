"""Fuzz target: loading a model from arbitrary bytes and from mutated valid models.

    python fuzz/fuzz_load.py [libFuzzer flags, e.g. -runs=100000 -max_total_time=300]

Every load must either give a working Engine or raise a FastortError
(ModelLoadError): any other exception, a crash or a hang is a finding.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["fastort"]):
    import fastort

import numpy as np
import onnx

from targets import seed_bytes, seed_models

SEEDS = seed_bytes()
PROTOS = list(seed_models().values())
HUGE = [0, 1, -1, 2**31 - 1, 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1, -(2**63)]


def mutate_bytes(fdp: "atheris.FuzzedDataProvider") -> bytes:
    data = bytearray(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        if not data:
            break
        op = fdp.ConsumeIntInRange(0, 3)
        pos = fdp.ConsumeIntInRange(0, len(data) - 1)
        if op == 0:
            data[pos] = fdp.ConsumeInt(1) & 0xFF
        elif op == 1:
            data[pos:pos] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
        elif op == 2:
            del data[pos : pos + fdp.ConsumeIntInRange(1, 16)]
        else:
            data[pos : pos + 10] = b"\xff" * 9 + b"\x01"  # a maximal varint
    return bytes(data)


def mutate_proto(fdp: "atheris.FuzzedDataProvider") -> bytes:
    model = onnx.ModelProto()
    model.CopyFrom(PROTOS[fdp.ConsumeIntInRange(0, len(PROTOS) - 1)])
    values = list(model.graph.input) + list(model.graph.output)
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        op = fdp.ConsumeIntInRange(0, 5)
        vi = values[fdp.ConsumeIntInRange(0, len(values) - 1)]
        t = vi.type.tensor_type
        if op == 0:
            t.elem_type = fdp.ConsumeIntInRange(-1, 30)
        elif op == 1 and t.HasField("shape"):
            t.shape.dim.add().dim_value = HUGE[fdp.ConsumeIntInRange(0, len(HUGE) - 1)]
        elif op == 2:
            t.ClearField("shape") if fdp.ConsumeBool() else t.shape.ClearField("dim")
        elif op == 3:
            vi.name = fdp.ConsumeUnicodeNoSurrogates(8)
        elif op == 4 and model.graph.initializer:
            init = model.graph.initializer[0]
            if init.dims:
                init.dims[0] = HUGE[fdp.ConsumeIntInRange(0, len(HUGE) - 1)]
        else:
            model.ir_version = fdp.ConsumeIntInRange(-2, 20)
    return model.SerializeToString()


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    blob = fdp.ConsumeBytes(fdp.remaining_bytes()) if mode == 0 else mutate_bytes(fdp) if mode == 1 else mutate_proto(fdp)
    try:
        engine = fastort.Engine(blob, log_level="fatal", max_request_bytes=1 << 24)
    except fastort.FastortError:
        return
    # Loaded: it must describe itself and run (or refuse) zero-filled inputs.
    repr(engine)
    feeds = {}
    for spec in engine.inputs:
        if spec.dtype is None or spec.shape is None:
            return
        shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
        if any(d > 64 for d in shape):
            return
        feeds[spec.name] = np.zeros(shape, spec.dtype) if spec.dtype != object else np.full(shape, "", object)
    try:
        engine.run(feeds)
    except fastort.FastortError:
        pass
    engine.close()


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
