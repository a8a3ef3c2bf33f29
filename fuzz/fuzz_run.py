"""Fuzz target: Engine.run / submit with mutated inputs against small models.

    python fuzz/fuzz_run.py [libFuzzer flags, e.g. -runs=200000 -max_total_time=300]

Mutates the container (dict, list, bare array, other objects), input names,
dtypes (byte order included), shapes (rank 0 to 5, huge dims over zero-stride
memory), strides, string contents (invalid UTF-8, lone surrogates, huge),
output names and out= buffers (aliased ones included), and the call (run,
batched run, submit with a timeout). Every call must return a dict or raise a
FastortError; any other exception, a crash or a hang (a future that does not
resolve) is a finding.
"""

from __future__ import annotations

import concurrent.futures
import sys
import warnings

import atheris

with atheris.instrument_imports(include=["fastort"]):
    import fastort

import numpy as np
from numpy.lib.stride_tricks import as_strided

from targets import seed_models

LIMIT = 1 << 24  # max_request_bytes of every engine: no fuzz input may make fastort allocate more
DTYPES = [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64,
          np.bool_, np.complex64, ">f4", ">i8", object, "U4", "S3", "datetime64[s]", "V4"]
DIMS = [0, 1, 2, 3, 4, 5, 7, 64, 2**20, 2**31, 2**40, 2**62]
WORDS = ["x", "y", "z", "idx", "a", "b", "s", "p", "shape", "", "x ", "é", "\ud800", "n"]

warnings.simplefilter("ignore")
ENGINES = []
for _name, _model in seed_models().items():
    for _kw in ({}, {"max_batch_size": 8, "max_delay_us": 200}, {"replicas": 2, "max_batch_size": 4}):
        ENGINES.append(fastort.Engine(_model, log_level="fatal", max_request_bytes=LIMIT, **_kw))


def make_strings(fdp: "atheris.FuzzedDataProvider", n: int) -> list:
    out = []
    for _ in range(n):
        kind = fdp.ConsumeIntInRange(0, 3)
        if kind == 0:
            out.append(fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 12)))  # may hold surrogates
        elif kind == 1:
            out.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 12)))  # may not be UTF-8
        elif kind == 2:
            out.append("x" * fdp.ConsumeIntInRange(0, 2 * LIMIT))  # up to twice the bound
        else:
            out.append(fdp.ConsumeIntInRange(-3, 3))  # not a string at all
    return out


def make_array(fdp: "atheris.FuzzedDataProvider"):
    kind = fdp.ConsumeIntInRange(0, 9)
    if kind == 0:
        return [fdp.ConsumeFloat()]  # a list, not an array
    if kind == 1:
        return None
    rank = fdp.ConsumeIntInRange(0, 5)
    shape = tuple(DIMS[fdp.ConsumeIntInRange(0, len(DIMS) - 1)] for _ in range(rank))
    dtype = np.dtype(DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)])
    small = int(np.prod([min(d, 64) for d in shape], dtype=np.int64))
    try:
        if dtype == object:
            if small > 4096:
                return None
            arr = np.empty([min(d, 64) for d in shape], object)
            flat = arr.reshape(-1)
            for i, s in enumerate(make_strings(fdp, flat.size)):
                flat[i] = s
            return arr
        if all(d <= 64 for d in shape) and small <= 4096:
            arr = np.frombuffer(fdp.ConsumeBytes(small * dtype.itemsize).ljust(small * dtype.itemsize, b"\0"),
                                dtype).reshape(shape).copy()
            if kind == 2 and arr.ndim:
                arr = arr[..., ::2]  # not contiguous
            elif kind == 3 and arr.ndim > 1:
                arr = arr.T
            elif kind == 4:
                arr = arr.copy()
                arr.flags.writeable = False
            return arr
        # Huge dims over a few bytes: zero strides (numpy refuses what overflows its own sizes).
        return as_strided(np.zeros(1, dtype), shape=shape, strides=(0,) * rank, writeable=False)
    except (ValueError, TypeError, OverflowError, MemoryError):
        return None


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    engine = ENGINES[fdp.ConsumeIntInRange(0, len(ENGINES) - 1)]
    names = [i.name for i in engine.inputs]
    form = fdp.ConsumeIntInRange(0, 4)
    arrays = [make_array(fdp) for _ in range(fdp.ConsumeIntInRange(0, len(names) + 1))]
    if form == 0:
        inputs = {}
        for a in arrays:
            key = names[fdp.ConsumeIntInRange(0, len(names) - 1)] if fdp.ConsumeBool() and names else \
                WORDS[fdp.ConsumeIntInRange(0, len(WORDS) - 1)]
            inputs[key if fdp.ConsumeIntInRange(0, 9) else fdp.ConsumeIntInRange(0, 3)] = a
    elif form == 1:
        inputs = list(arrays)
    elif form == 2:
        inputs = tuple(arrays)
    elif form == 3:
        inputs = arrays[0] if arrays else None
    else:
        inputs = fdp.ConsumeUnicode(4)
    outputs = None
    if fdp.ConsumeBool():
        pool = [o.name for o in engine.outputs] + ["nope", ""]
        outputs = [pool[fdp.ConsumeIntInRange(0, len(pool) - 1)] for _ in range(fdp.ConsumeIntInRange(0, 3))]
        if fdp.ConsumeIntInRange(0, 5) == 0:
            outputs = "y"
    out = None
    if fdp.ConsumeIntInRange(0, 3) == 0:
        out = {}
        shared = np.empty(16, np.float32)
        for o in engine.outputs:
            choice = fdp.ConsumeIntInRange(0, 4)
            if choice == 0:
                out[o.name] = shared[: fdp.ConsumeIntInRange(0, 16)]  # aliased between outputs
            elif choice == 1 and arrays and isinstance(arrays[0], np.ndarray):
                out[o.name] = arrays[0]  # aliasing an input
            elif choice == 2:
                out[o.name] = make_array(fdp)
    call = fdp.ConsumeIntInRange(0, 2)
    try:
        if call == 0:
            result = engine.run(inputs, outputs=outputs, out=out)
        elif call == 1:
            result = engine.run(inputs, outputs=outputs, timeout=fdp.ConsumeIntInRange(0, 2) * 0.01)
        else:
            future = engine.submit(inputs, outputs=outputs, timeout=fdp.ConsumeIntInRange(0, 2) * 0.01)
            try:
                result = future.result(timeout=30)
            except concurrent.futures.TimeoutError:
                raise RuntimeError("hang: a submitted request did not finish within 30 s") from None
    except fastort.FastortError:
        return
    assert isinstance(result, dict), type(result)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
