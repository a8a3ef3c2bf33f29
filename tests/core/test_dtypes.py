"""Every data kind goes through fastort with the values onnxruntime.InferenceSession gives."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import fastort
import models

ml_dtypes = pytest.importorskip("ml_dtypes")

NUMERIC = [
    (TensorProto.FLOAT16, np.float16),
    (TensorProto.FLOAT, np.float32),
    (TensorProto.DOUBLE, np.float64),
    (TensorProto.INT8, np.int8),
    (TensorProto.INT16, np.int16),
    (TensorProto.INT32, np.int32),
    (TensorProto.INT64, np.int64),
    (TensorProto.UINT8, np.uint8),
    (TensorProto.UINT16, np.uint16),
    (TensorProto.UINT32, np.uint32),
    (TensorProto.UINT64, np.uint64),
    (TensorProto.BOOL, np.bool_),
]
NUMERIC_IDS = [np.dtype(d).name for _, d in NUMERIC]

ML_TYPES = [
    (TensorProto.BFLOAT16, "bfloat16", np.uint16),
    (TensorProto.FLOAT8E4M3FN, "float8_e4m3fn", np.uint8),
    (TensorProto.FLOAT8E4M3FNUZ, "float8_e4m3fnuz", np.uint8),
    (TensorProto.FLOAT8E5M2, "float8_e5m2", np.uint8),
    (TensorProto.FLOAT8E5M2FNUZ, "float8_e5m2fnuz", np.uint8),
]
ML_IDS = [name for _, name, _ in ML_TYPES]


def sample(dtype, shape, rng: np.random.Generator) -> np.ndarray:
    """Values that exercise the whole range of `dtype`: extremes, signs, NaN and inf."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    if dtype == np.bool_:
        return rng.integers(0, 2, n).astype(bool).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        values[:2] = [info.min, info.max][:n]
        return values.reshape(shape)
    info = np.finfo(dtype)
    values = (rng.standard_normal(n) * 1000).astype(dtype)
    values[:7] = [np.nan, np.inf, -np.inf, -0.0, info.max, info.tiny / 4, info.min][:n]
    return values.reshape(shape)


def contiguous(x: np.ndarray, dtype=None) -> np.ndarray:
    """A C-contiguous native-order copy (unlike np.ascontiguousarray, keeps rank 0)."""
    return np.array(x, dtype=dtype or x.dtype.newbyteorder("="), order="C")


# -- numeric tensors -----------------------------------------------------------


@pytest.mark.parametrize("elem_type,dtype", NUMERIC, ids=NUMERIC_IDS)
def test_numeric_round_trip(elem_type, dtype, reference, ort_sess, rng):
    model = models.identity(elem_type, ["n", 3])
    x = sample(dtype, (7, 3), rng)
    engine = fastort.Engine(model)
    got = engine.run({"x": x})["y"]
    want = reference(model, {"x": x})["y"]
    assert got.dtype == want.dtype == np.dtype(dtype)
    assert got.shape == want.shape == x.shape
    np.testing.assert_array_equal(got, want)
    assert got.tobytes() == x.tobytes()  # bit for bit (NaN payloads and -0.0 too)
    # the dtype and type string fastort reports are onnxruntime's
    (spec,) = engine.inputs
    ref_in = ort_sess(model).get_inputs()[0]
    assert spec.dtype == np.dtype(dtype)
    assert spec.type == ref_in.type
    assert engine.outputs[0].type == ort_sess(model).get_outputs()[0].type


@pytest.mark.parametrize("elem_type,dtype", NUMERIC, ids=NUMERIC_IDS)
def test_numeric_rank0_and_zero_sized(elem_type, dtype, reference, rng):
    model = models.unranked_identity(elem_type)
    engine = fastort.Engine(model)
    for x in (sample(dtype, (), rng), np.zeros((2, 0, 3), dtype), np.zeros((0,), dtype)):
        got = engine.run({"x": x})["y"]
        want = reference(model, {"x": x})["y"]
        assert got.shape == want.shape == x.shape
        assert got.dtype == want.dtype == x.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.float16, np.uint16], ids=np.dtype)
def test_strided_and_byte_swapped_inputs(dtype, reference, rng):
    """Arrays that cannot be read in place are converted once, to the same values."""
    elem_type = dict((np.dtype(d), t) for t, d in NUMERIC)[np.dtype(dtype)]
    model = models.identity(elem_type, ["n", "m"])
    engine = fastort.Engine(model)
    base = sample(dtype, (6, 8), rng)
    variants = {
        "strided": base[::2, 1::3],
        "transposed": base.T,
        "fortran": np.asfortranarray(base),
        "reversed": base[::-1],
        "byte-swapped": base.astype(base.dtype.newbyteorder(">")),
    }
    for label, x in variants.items():
        got = engine.run({"x": x})["y"]
        want = reference(model, {"x": contiguous(x, dtype)})["y"]
        assert got.dtype == np.dtype(dtype), label
        np.testing.assert_array_equal(got, want, err_msg=label)


def test_numpy_scalar_input(reference):
    model = models.scalar_plus_matrix()
    b = np.arange(6, dtype=np.float32).reshape(3, 2)
    want = reference(model, {"a": np.array(2.5, np.float32), "b": b})["c"]
    engine = fastort.Engine(model)
    np.testing.assert_array_equal(engine.run({"a": np.float32(2.5), "b": b})["c"], want)
    np.testing.assert_array_equal(engine.run({"a": np.array(2.5, np.float32), "b": b})["c"], want)


# -- strings -------------------------------------------------------------------

WORDS = ["", "héllo", "wörld 🌍", "a" * 1000, "x\x00y", "日本語", "tab\tnew\nline"]


STRING_KINDS = [
    pytest.param("U", id="str-U"),
    pytest.param("O", id="object"),
    pytest.param("T", id="StringDType", marks=pytest.mark.skipif(
        not hasattr(np, "dtypes") or not hasattr(np.dtypes, "StringDType"), reason="numpy < 2 has no StringDType")),
]


@pytest.mark.parametrize("kind", STRING_KINDS)
def test_string_tensors(kind, reference):
    model = models.identity(TensorProto.STRING, [None])
    x = np.array(WORDS, dtype=np.dtypes.StringDType() if kind == "T" else kind)
    engine = fastort.Engine(model)
    got = engine.run({"x": x})["y"]
    # InferenceSession's 'U' path stops at an embedded NUL; its object path is exact
    want = reference(model, {"x": x.astype(object)})["y"]
    assert got.dtype == want.dtype == object
    assert got.shape == want.shape
    assert got.tolist() == want.tolist() == WORDS
    assert all(type(s) is str for s in got.tolist())
    assert engine.inputs[0].dtype == object and engine.inputs[0].type == "tensor(string)"


def test_bytes_input_is_utf8(reference):
    """numpy 'S' arrays (and bytes elements of object arrays) are taken as UTF-8."""
    model = models.identity(TensorProto.STRING, [None])
    words = [w for w in WORDS if not w.endswith("\x00")]
    x = np.array([w.encode() for w in words], dtype="S")
    engine = fastort.Engine(model)
    want = reference(model, {"x": np.array(words, dtype=object)})["y"]
    assert engine.run({"x": x})["y"].tolist() == want.tolist()
    mixed = np.array([w.encode() if i % 2 else w for i, w in enumerate(words)], dtype=object)
    assert engine.run({"x": mixed})["y"].tolist() == want.tolist()


def test_string_shapes(reference):
    model = models.unranked_identity(TensorProto.STRING)
    engine = fastort.Engine(model)
    grid = np.array([["a", "bb", "ccc"], ["d", "", "f"]], dtype=object)
    for x in (np.array("scalär", dtype=object), grid, grid.T, grid[:, ::-2], np.zeros((0, 3), dtype="U1"),
              np.array(["x"] * 24).reshape(2, 3, 4)):
        got = engine.run({"x": x})["y"]
        want = reference(model, {"x": contiguous(x).astype(object)})["y"]
        assert got.dtype == object and got.shape == want.shape == x.shape
        assert got.tolist() == want.tolist()


def test_sequence_of_strings(reference):
    model = models.sequence(TensorProto.STRING)
    a, b = np.array(["x", "yé"], dtype=object), np.array(["", "z"], dtype=object)
    got = fastort.Engine(model).run({"a": a, "b": b})["seq"]
    want = reference(model, {"a": a, "b": b})["seq"]
    assert [g.tolist() for g in got] == [w.tolist() for w in want]


# -- bfloat16 and float8 through ml_dtypes --------------------------------------


@pytest.mark.parametrize("elem_type,name,bits", ML_TYPES, ids=ML_IDS)
def test_ml_dtypes_every_value(elem_type, name, bits, ort_sess):
    """All bit patterns of the type go through Identity unchanged, and onnxruntime's
    Cast to float32 gives the values ml_dtypes' conversion gives (NaN included)."""
    dtype = np.dtype(getattr(ml_dtypes, name))
    model = models.identity(elem_type, ["n"], with_cast=True)
    x = np.arange(np.iinfo(bits).max + 1, dtype=np.int64).astype(bits).view(dtype)
    engine = fastort.Engine(model)
    out = engine.run({"x": x})
    assert out["y"].dtype == dtype
    np.testing.assert_array_equal(out["y"].view(bits), x.view(bits))
    assert out["f"].dtype == np.float32
    np.testing.assert_array_equal(out["f"], x.astype(np.float32))  # NaN == NaN here
    assert engine.inputs[0].dtype == dtype and engine.outputs[0].dtype == dtype
    assert engine.inputs[0].type == ort_sess(model).get_inputs()[0].type


@pytest.mark.parametrize("elem_type,name,bits", ML_TYPES, ids=ML_IDS)
def test_ml_dtypes_computed_output(elem_type, name, bits, rng):
    """An output onnxruntime computes (Cast from float32) equals ml_dtypes' rounding."""
    dtype = np.dtype(getattr(ml_dtypes, name))
    top = float(ml_dtypes.finfo(dtype).max)
    x = np.concatenate([rng.uniform(-top, top, 4096), np.linspace(-4, 4, 257)]).astype(np.float32)
    got = fastort.Engine(models.cast_from_float(elem_type)).run({"x": x})["y"]
    want = x.astype(dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.view(bits), want.view(bits))


@pytest.mark.parametrize("elem_type,name,bits", ML_TYPES, ids=ML_IDS)
def test_ml_dtypes_shapes_and_layouts(elem_type, name, bits):
    dtype = np.dtype(getattr(ml_dtypes, name))
    engine = fastort.Engine(models.unranked_identity(elem_type, with_cast=True))
    grid = (np.arange(24, dtype=np.float32).reshape(4, 6) / 4).astype(dtype)
    for x in (np.array(1.5, dtype), np.zeros((3, 0), dtype), grid, grid[:, ::2], grid.T):
        out = engine.run({"x": x})
        assert out["y"].dtype == dtype and out["y"].shape == x.shape
        np.testing.assert_array_equal(out["y"].view(bits), contiguous(x).view(bits))
        np.testing.assert_array_equal(out["f"], x.astype(np.float32))
