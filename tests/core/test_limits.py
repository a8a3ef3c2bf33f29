"""Request bounds (max_request_bytes / max_request_rows), sizes that overflow,
string tensors with huge or invalid UTF-8 contents, rank-0 inputs, empty
output lists and aliased output buffers."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided
from onnx import TensorProto, helper

import fastort
from fastort import InvalidInputError, RequestTooLargeError
import models

W = models.tiny_weights()


def two_outputs():
    """y = Identity(x), z = Neg(x) over x[n] float32."""
    return models.make_model(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["z"])],
        [models.tensor("x", TensorProto.FLOAT, ["n"])],
        [models.tensor("y", TensorProto.FLOAT, ["n"]), models.tensor("z", TensorProto.FLOAT, ["n"])],
    )


# ------------------------------------------------------------- bounds ----


@pytest.mark.parametrize("batching", [False, True])
def test_max_request_rows(batching: bool):
    kwargs = {"max_batch_size": 8} if batching else {}
    engine = fastort.Engine(models.tiny(), max_request_rows=4, **kwargs)
    x = np.ones((4, 4), np.float32)
    np.testing.assert_allclose(engine.run({"x": x})["y"], np.maximum(x @ W, 0), rtol=1e-6)
    with pytest.raises(RequestTooLargeError, match=r"input 'x': 5 rows .* max_request_rows=4"):
        engine.run({"x": np.ones((5, 4), np.float32)})
    with pytest.raises(RequestTooLargeError):
        engine.submit({"x": np.ones((5, 4), np.float32)})
    assert issubclass(RequestTooLargeError, InvalidInputError)
    engine.run({"x": x})  # still serving


def test_max_request_rows_follows_the_batch_axis():
    engine = fastort.Engine(models.identity(TensorProto.FLOAT, [3, "n"]), max_request_rows=2, batch_axis=1,
                            max_batch_size=4)
    engine.run({"x": np.ones((3, 2), np.float32)})
    with pytest.raises(RequestTooLargeError, match=r"dim 1"):
        engine.run({"x": np.ones((3, 3), np.float32)})


@pytest.mark.parametrize("batching", [False, True])
def test_max_request_bytes(batching: bool):
    kwargs = {"max_batch_size": 8} if batching else {}
    engine = fastort.Engine(models.add_mul(), max_request_bytes=800, **kwargs)
    a = np.ones(100, np.float32)
    out = engine.run({"a": a, "b": a})  # 800 bytes: at the bound
    np.testing.assert_array_equal(out["s"], a + a)
    with pytest.raises(RequestTooLargeError, match=r"input 'b'.*max_request_bytes=800"):
        engine.run({"a": a, "b": np.ones(101, np.float32)})


def test_huge_non_contiguous_input_is_refused_before_the_copy():
    # 2**40 x 4 float32 over 16 bytes of memory (zero strides): a contiguous copy
    # would need 16 TiB. The bound refuses it before anything is allocated.
    engine = fastort.Engine(models.tiny(), max_request_bytes=1 << 30)
    huge = as_strided(np.zeros(4, np.float32), shape=(1 << 40, 4), strides=(0, 4))
    with pytest.raises(RequestTooLargeError, match=r"max_request_bytes"):
        engine.run({"x": huge})
    with pytest.raises(RequestTooLargeError):
        engine.submit({"x": huge})
    unbounded = fastort.Engine(models.tiny())  # no bound: still never a copy larger than the machine's memory
    with pytest.raises(RequestTooLargeError, match=r"more memory than this machine has"):
        unbounded.run({"x": huge})
    small = as_strided(np.ones(4, np.float32), shape=(3, 4), strides=(0, 4))  # copied once, fine
    np.testing.assert_allclose(engine.run({"x": small})["y"], np.maximum(np.ones((3, 4)) @ W, 0), rtol=1e-6)


def test_huge_zero_size_dims_do_not_overflow():
    engine = fastort.Engine(models.unranked_identity(TensorProto.FLOAT))
    x = np.zeros((0, 1 << 40), np.float32)
    assert engine.run({"x": x})["y"].shape == (0, 1 << 40)


def test_string_bounds_and_contents():
    engine = fastort.Engine(models.identity(TensorProto.STRING, ["n"]), max_request_bytes=1 << 20)
    big = "x" * ((1 << 20) - 16)  # UTF-8 bytes + 16 per element
    assert engine.run({"x": np.array([big], object)})["y"][0] == big  # exactly at the bound
    with pytest.raises(RequestTooLargeError, match=r"input 'x'"):
        engine.run({"x": np.array([big, "y"], object)})
    with pytest.raises(RequestTooLargeError):
        engine.run({"x": np.array([b"\x00" * ((1 << 20) - 15)], object)})
    # A huge array of empty strings over a few bytes is refused before it is copied.
    empties = as_strided(np.array([""], "U1"), shape=(1 << 40,), strides=(0,))
    for eng in (engine, fastort.Engine(models.identity(TensorProto.STRING, ["n"]))):  # bounded, and not
        with pytest.raises(RequestTooLargeError, match=r"strings"):
            eng.run({"x": empties})


def test_invalid_utf8_and_surrogates():
    engine = fastort.Engine(models.identity(TensorProto.STRING, ["n"]))
    raw = [b"\xff\xfe", b"ok", b"\xc3\x28", b"\x00mid\x00", b""]
    out = engine.run({"x": np.array(raw, object)})["y"]
    # Bytes that are not UTF-8 come back as str with surrogate escapes: nothing is lost.
    assert [s.encode("utf-8", "surrogateescape") for s in out] == raw
    with pytest.raises(InvalidInputError, match=r"element 1 cannot be encoded as UTF-8"):
        engine.run({"x": np.array(["fine", "\ud800"], object)})
    with pytest.raises(InvalidInputError, match=r"str or bytes"):
        engine.run({"x": np.array(["a", 3], object)})
    batched = fastort.Engine(models.identity(TensorProto.STRING, ["n"]), max_batch_size=8)
    futures = [batched.submit({"x": np.array([r], object)}) for r in raw]
    assert [f.result(timeout=30)["y"][0].encode("utf-8", "surrogateescape") for f in futures] == raw


# --------------------------------------------------------------- gaps ----


def test_rank_zero_input_rank_is_checked():
    engine = fastort.Engine(models.scalar_plus_matrix())
    b = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(engine.run({"a": np.float32(2), "b": b})["c"], b + 2)
    with pytest.raises(InvalidInputError, match=r"input 'a': expected rank 0"):
        engine.run({"a": np.ones((2, 2), np.float32), "b": b})
    with pytest.raises(InvalidInputError, match=r"expected rank 0"):
        engine.run({"a": np.ones(1, np.float32), "b": b})


def test_rank_zero_check_from_a_file(tmp_path):
    import onnx

    path = tmp_path / "scalar.onnx"
    onnx.save(models.scalar_plus_matrix(), str(path))
    engine = fastort.Engine(path)
    with pytest.raises(InvalidInputError, match=r"expected rank 0"):
        engine.run({"a": np.ones(3, np.float32), "b": np.ones((1, 2), np.float32)})


def test_unranked_input_still_takes_any_rank():
    engine = fastort.Engine(models.unranked_identity(TensorProto.FLOAT))
    for shape in [(), (3,), (2, 2, 2)]:
        x = np.ones(shape, np.float32)
        np.testing.assert_array_equal(engine.run({"x": x})["y"], x)


def test_empty_outputs_list_is_an_error():
    engine = fastort.Engine(two_outputs())
    with pytest.raises(InvalidInputError, match=r"outputs is empty.*\(model outputs: y, z\)"):
        engine.run({"x": np.ones(3, np.float32)}, outputs=[])
    batched = fastort.Engine(two_outputs(), max_batch_size=4)
    with pytest.raises(InvalidInputError, match=r"outputs is empty"):
        batched.submit({"x": np.ones(3, np.float32)}, outputs=())
    assert list(engine.run({"x": np.ones(3, np.float32)}, outputs=["z"])) == ["z"]


def test_out_buffers_that_alias_each_other_or_an_input_are_refused():
    engine = fastort.Engine(two_outputs())
    x = np.arange(4, dtype=np.float32)
    buf = np.empty(4, np.float32)
    with pytest.raises(InvalidInputError, match=r"output buffer for '(y|z)' and output buffer for '(y|z)' overlap"):
        engine.run({"x": x}, out={"y": buf, "z": buf})
    base = np.empty(6, np.float32)  # partial overlap: two views of one buffer
    with pytest.raises(InvalidInputError, match=r"overlap"):
        engine.run({"x": x}, out={"y": base[:4], "z": base[2:]})
    with pytest.raises(InvalidInputError, match=r"overlaps input 'x'"):
        engine.run({"x": x}, out={"y": x})
    with pytest.raises(InvalidInputError, match=r"overlaps input 'x'"):
        engine.run({"x": base[:4]}, out={"z": base[2:]})
    y, z = np.empty(4, np.float32), np.empty(4, np.float32)  # separate buffers: fine
    out = engine.run({"x": x}, out={"y": y, "z": z})
    assert out["y"] is y and out["z"] is z
    np.testing.assert_array_equal(z, -x)
    adjacent = np.empty(8, np.float32)  # touching, not overlapping
    engine.run({"x": x}, out={"y": adjacent[:4], "z": adjacent[4:]})
    np.testing.assert_array_equal(adjacent, np.concatenate([x, -x]))


# ------------------------------------------------------ untrusted models ----


def external_model(location: str):
    """y = x + W, W[4] kept in the external file `location`."""
    import onnx

    t = onnx.TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                              [models.tensor("x", TensorProto.FLOAT, [4])],
                              [models.tensor("y", TensorProto.FLOAT, [4])], [t])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=models.IR_VERSION)


@pytest.mark.parametrize("location", ["w.bin", "../w.bin", "/etc/hostname"])
def test_bytes_model_with_external_data_is_refused(tmp_path, monkeypatch, location: str):
    (tmp_path / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)  # onnxruntime would look next to the working directory
    model = external_model(location)
    for source in (model, model.SerializeToString(), bytearray(model.SerializeToString())):
        with pytest.raises(fastort.ModelLoadError, match=r"external file .*pass its path"):
            fastort.Engine(source)


def test_external_data_through_a_symlink_out_of_the_folder_is_refused(tmp_path):
    import onnx

    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").symlink_to(outside)
    onnx.save(external_model("w.bin"), str(folder / "m.onnx"))
    with pytest.raises(fastort.ModelLoadError, match=r"outside the model's folder"):
        fastort.Engine(folder / "m.onnx")
    (folder / "w.bin").unlink()
    (folder / "w.bin").write_bytes(outside.read_bytes())  # inside the folder: loads
    engine = fastort.Engine(folder / "m.onnx")
    np.testing.assert_array_equal(engine.run({"x": np.ones(4, np.float32)})["y"], np.arange(4) + 1)
