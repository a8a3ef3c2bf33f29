"""Sequence, optional and map inputs: lists/tuples of arrays, None or the value,
dicts; through run, submit and run_async, with the values onnxruntime's own
InferenceSession gives (where its Python API takes the input at all)."""

from __future__ import annotations

import asyncio
import threading
import warnings
from typing import Any, Dict, List

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import fastort
from conftest import ort_session

ML = h.make_opsetid("ai.onnx.ml", 3)

# Every element type onnxruntime runs sequences of (bfloat16 is not among
# ONNX's sequence element types: onnxruntime refuses such models at load).
SEQ_TYPES = [
    (T.FLOAT, np.float32), (T.DOUBLE, np.float64), (T.FLOAT16, np.float16),
    (T.INT8, np.int8), (T.INT16, np.int16), (T.INT32, np.int32), (T.INT64, np.int64),
    (T.UINT8, np.uint8), (T.UINT16, np.uint16), (T.UINT32, np.uint32), (T.UINT64, np.uint64),
    (T.BOOL, np.bool_), (T.STRING, object),
]
SEQ_IDS = ["string" if d is object else np.dtype(d).name for _, d in SEQ_TYPES]


def make(nodes: List[Any], ins: List[Any], outs: List[Any], opset: int = 18, ml: bool = False) -> bytes:
    graph = h.make_graph(nodes, "m", ins, outs)
    imports = [h.make_opsetid("", opset)] + ([ML] if ml else [])
    return h.make_model(graph, opset_imports=imports, ir_version=8).SerializeToString()


def seq_info(name: str, elem: int) -> Any:
    return h.make_tensor_sequence_value_info(name, elem, None)


def optional_info(name: str, inner: Any) -> Any:
    return h.make_value_info(name, h.make_optional_type_proto(inner))


def map_info(name: str, key: int, value: int) -> Any:
    return h.make_value_info(name, h.make_map_type_proto(key, h.make_tensor_type_proto(value, None)))


def sample(dtype: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    if dtype is object:
        return np.array([f"s{rng.integers(100)}é" for _ in range(n)], dtype=object)
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, n).astype(np.bool_)
    return rng.integers(0, 100, n).astype(dtype)


def same(a: Any, b: Any) -> bool:
    """Equal values: arrays (dtype and contents), lists, dicts, None."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict) or isinstance(b, dict):
        return a == b
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.all(a == b))


def three_ways(engine: fastort.Engine, feeds: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The results of run, submit(...).result() and run_async for `feeds`."""
    async def run_async() -> Dict[str, Any]:
        return await engine.run_async(feeds)

    return [engine.run(feeds), engine.submit(feeds).result(timeout=30), asyncio.run(run_async())]


def check_equal(engine: fastort.Engine, model: bytes, feeds: Dict[str, Any], ort_feeds: Any = None) -> None:
    if ort_feeds is None:  # onnxruntime's Python API takes lists, not tuples
        ort_feeds = {k: list(v) if isinstance(v, tuple) else v for k, v in feeds.items()}
    expected = ort_session(model).run(None, ort_feeds)
    names = [o.name for o in engine.outputs]
    for result in three_ways(engine, feeds):
        assert list(result) == names
        for name, want in zip(names, expected):
            assert same(result[name], want), (name, result[name], want)


# ------------------------------------------------------------- sequences ----


@pytest.mark.parametrize("elem,dtype", SEQ_TYPES, ids=SEQ_IDS)
def test_sequence_of_every_element_type(elem: int, dtype: Any) -> None:
    model = make([h.make_node("SequenceLength", ["s"], ["n"]),
                  h.make_node("ConcatFromSequence", ["s"], ["c"], axis=0),
                  h.make_node("SequenceAt", ["s", "i"], ["at"])],
                 [seq_info("s", elem), h.make_tensor_value_info("i", T.INT64, [])],
                 [h.make_tensor_value_info("n", T.INT64, []), h.make_tensor_value_info("c", elem, None),
                  h.make_tensor_value_info("at", elem, None)])
    rng = np.random.default_rng(elem)
    items = [sample(dtype, n, rng) for n in (3, 1, 4)]
    with fastort.Engine(model) as engine:
        assert engine.inputs[0].type.startswith("seq(tensor(") and engine.inputs[0].dtype is None
        check_equal(engine, model, {"s": items, "i": np.array(2, np.int64)})
        check_equal(engine, model, {"s": tuple(items[:2]), "i": np.array(-1, np.int64)})  # a tuple too


@pytest.mark.parametrize("elem,dtype", SEQ_TYPES, ids=SEQ_IDS)
def test_empty_sequence_of_every_element_type(elem: int, dtype: Any) -> None:
    # onnxruntime's C API CreateValue refuses zero values; fastort makes the
    # empty sequence with onnxruntime's own SequenceEmpty operator.
    model = make([h.make_node("SequenceLength", ["s"], ["n"]), h.make_node("Identity", ["s"], ["same"])],
                 [seq_info("s", elem)], [h.make_tensor_value_info("n", T.INT64, []), seq_info("same", elem)])
    with fastort.Engine(model) as engine:
        check_equal(engine, model, {"s": []})
        for result in three_ways(engine, {"s": []}):
            assert result["n"] == 0 and result["same"] == []
        # Then a non-empty one: the shared empty value was not changed by the runs.
        assert engine.run({"s": [sample(dtype, 2, np.random.default_rng(0))]})["n"] == 1
        assert engine.run({"s": []})["n"] == 0


def test_sequence_insert_and_outputs_as_lists() -> None:
    model = make([h.make_node("SequenceInsert", ["s", "x"], ["out"]),
                  h.make_node("SequenceLength", ["out"], ["n"])],
                 [seq_info("s", T.FLOAT), h.make_tensor_value_info("x", T.FLOAT, None)],
                 [seq_info("out", T.FLOAT), h.make_tensor_value_info("n", T.INT64, [])])
    xs = [np.arange(3, dtype=np.float32), np.ones((2, 2), np.float32)]
    x = np.full(5, 7, np.float32)
    with fastort.Engine(model) as engine:
        check_equal(engine, model, {"s": xs, "x": x})
        out = engine.run({"s": [], "x": x})
        assert out["n"] == 1 and same(out["out"], [x])
        assert isinstance(engine.run([xs, x])["out"], list)  # inputs as a list in input order


def test_loop_carrying_a_sequence() -> None:
    # Loop state: a sequence that grows by one tensor per iteration.
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]),
         h.make_node("Cast", ["iter"], ["it_f"], to=T.FLOAT),
         h.make_node("Unsqueeze", ["it_f", "axes"], ["it_1d"]),
         h.make_node("SequenceInsert", ["seq_in", "it_1d"], ["seq_out"])],
        "body",
        [h.make_tensor_value_info("iter", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         seq_info("seq_in", T.FLOAT)],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), seq_info("seq_out", T.FLOAT)],
        initializer=[h.make_tensor("axes", T.INT64, [1], [0])])
    model = make([h.make_node("Loop", ["m", "", "s0"], ["s_final"], body=body),
                  h.make_node("ConcatFromSequence", ["s_final"], ["c"], axis=0)],
                 [h.make_tensor_value_info("m", T.INT64, []), seq_info("s0", T.FLOAT)],
                 [seq_info("s_final", T.FLOAT), h.make_tensor_value_info("c", T.FLOAT, None)])
    with fastort.Engine(model) as engine:
        feeds = {"m": np.array(4, np.int64), "s0": [np.array([10, 11], np.float32)]}
        check_equal(engine, model, feeds)
        assert engine.run(feeds)["c"].tolist() == [10, 11, 0, 1, 2, 3]
        assert engine.run({"m": np.array(3, np.int64), "s0": []})["c"].tolist() == [0, 1, 2]


def test_sequence_map() -> None:
    body = h.make_graph([h.make_node("Mul", ["x", "x"], ["y"])], "square",
                        [h.make_tensor_value_info("x", T.FLOAT, None)], [h.make_tensor_value_info("y", T.FLOAT, None)])
    model = make([h.make_node("SequenceMap", ["s"], ["squares"], body=body)],
                 [seq_info("s", T.FLOAT)], [seq_info("squares", T.FLOAT)])
    xs = [np.arange(3, dtype=np.float32), np.array([[2, 3]], np.float32)]
    with fastort.Engine(model) as engine:
        check_equal(engine, model, {"s": xs})
        assert same(engine.run({"s": xs})["squares"], [x * x for x in xs])


# ------------------------------------------------------------- optionals ----


def test_optional_sequence_none_empty_and_value() -> None:
    seq_type = h.make_sequence_type_proto(h.make_tensor_type_proto(T.FLOAT, None))
    model = make([h.make_node("OptionalHasElement", ["o"], ["has"])],
                 [optional_info("o", seq_type)], [h.make_tensor_value_info("has", T.BOOL, [])])
    get = make([h.make_node("OptionalGetElement", ["o"], ["s"]), h.make_node("SequenceLength", ["s"], ["n"])],
               [optional_info("o", seq_type)], [h.make_tensor_value_info("n", T.INT64, [])])
    xs = [np.ones(2, np.float32), np.zeros(1, np.float32)]
    with fastort.Engine(model) as engine, fastort.Engine(get) as getter:
        assert engine.inputs[0].type == "optional(seq(tensor(float)))"
        check_equal(engine, model, {"o": None}, ort_feeds={})  # onnxruntime's Python API: the feed left out
        for result in three_ways(engine, {"o": None}):
            assert not result["has"]
        check_equal(engine, model, {"o": xs})
        for result in three_ways(engine, {"o": []}):  # an empty sequence is a value
            assert result["has"]
        check_equal(getter, get, {"o": xs})
        assert getter.run({"o": []})["n"] == 0


def test_optional_tensor_and_a_left_out_input_among_others() -> None:
    # "o" comes first: leaving it out shifts the names of the inputs fed.
    model = make([h.make_node("OptionalHasElement", ["o"], ["has"]), h.make_node("Neg", ["x"], ["y"])],
                 [optional_info("o", h.make_tensor_type_proto(T.INT32, None)),
                  h.make_tensor_value_info("x", T.FLOAT, None)],
                 [h.make_tensor_value_info("has", T.BOOL, []), h.make_tensor_value_info("y", T.FLOAT, None)])
    x = np.arange(4, dtype=np.float32)
    with fastort.Engine(model) as engine:
        check_equal(engine, model, {"o": None, "x": x}, ort_feeds={"x": x})
        check_equal(engine, model, {"o": np.arange(3, dtype=np.int32), "x": x})
        out = engine.run([None, x])
        assert not out["has"] and same(out["y"], -x)


def test_optional_outputs_come_back_as_none_or_the_value() -> None:
    tensor = h.make_tensor_type_proto(T.FLOAT, None)
    model = make([h.make_node("Identity", ["o"], ["same"]), h.make_node("Optional", [], ["empty"], type=tensor)],
                 [optional_info("o", tensor)], [optional_info("same", tensor), optional_info("empty", tensor)])
    x = np.arange(3, dtype=np.float32)
    with fastort.Engine(model) as engine:
        for result in three_ways(engine, {"o": x}):
            assert same(result["same"], x) and result["empty"] is None
        for result in three_ways(engine, {"o": None}):
            assert result["same"] is None and result["empty"] is None
        expected = ort_session(model).run(None, {"o": x})
        assert same(engine.run({"o": x})["same"], expected[0]) and expected[1] is None


# ------------------------------------------------------------------ maps ----


@pytest.mark.parametrize("key,value,vocab,feed", [
    (T.STRING, T.FLOAT, {"string_vocabulary": ["a", "b", "c"]}, {"a": 1.5, "c": 2}),
    (T.INT64, T.FLOAT, {"int64_vocabulary": [1, 5, 9]}, {5: 1.5, np.int64(9): np.float32(3)}),
], ids=["string-keys", "int64-keys"])
def test_map_input_like_onnxruntime(key: int, value: int, vocab: Dict[str, Any], feed: Dict[Any, Any]) -> None:
    model = make([h.make_node("DictVectorizer", ["m"], ["y"], domain="ai.onnx.ml", **vocab)],
                 [map_info("m", key, value)], [h.make_tensor_value_info("y", value, None)], ml=True)
    with fastort.Engine(model) as engine:
        check_equal(engine, model, {"m": feed})


@pytest.mark.parametrize("key,value,vocab,feed,expected", [
    (T.INT64, T.DOUBLE, {"int64_vocabulary": [1, 5, 9]}, {5: 1.5, 1: 3}, np.array([[3.0, 1.5, 0.0]])),
    (T.STRING, T.INT64, {"string_vocabulary": ["a", "b"]}, {"b": 7}, np.array([[0, 7]], np.int64)),
    (T.INT64, T.STRING, {"int64_vocabulary": [1, 2]}, {2: "x"}, np.array([["", "x"]], dtype=object)),
    (T.STRING, T.DOUBLE, {"string_vocabulary": ["a", "b"]}, {}, np.zeros((1, 2))),
], ids=["int64-double", "string-int64", "int64-string", "empty"])
def test_map_input_types_onnxruntime_python_cannot_feed(key: int, value: int, vocab: Dict[str, Any],
                                                        feed: Dict[Any, Any], expected: np.ndarray) -> None:
    # onnxruntime's Python API makes every dict a map(*, float) (or refuses an
    # empty one); the C API makes each of these, and the model runs them.
    model = make([h.make_node("DictVectorizer", ["m"], ["y"], domain="ai.onnx.ml", **vocab)],
                 [map_info("m", key, value)], [h.make_tensor_value_info("y", value, None)], ml=True)
    with fastort.Engine(model) as engine:
        for result in three_ways(engine, {"m": feed}):
            assert same(result["y"], expected)


def test_sequence_of_maps_in_and_out() -> None:
    seq_of_maps = h.make_value_info("s", h.make_sequence_type_proto(
        h.make_map_type_proto(T.INT64, h.make_tensor_type_proto(T.FLOAT, None))))
    model = make([], [seq_of_maps], [seq_of_maps], ml=True)  # the input is the output
    maps = [{1: 1.0}, {2: 2.0, 3: 4}]
    with fastort.Engine(model) as engine:
        for result in three_ways(engine, {"s": maps}):
            assert result["s"] == [{1: 1.0}, {2: 2.0, 3: 4.0}]
        with pytest.raises(fastort.InvalidInputError, match="empty sequence of maps cannot be made"):
            engine.run({"s": []})


def test_zipmap_output_is_a_list_of_dicts() -> None:
    seq_map = h.make_sequence_type_proto(h.make_map_type_proto(T.STRING, h.make_tensor_type_proto(T.FLOAT, None)))
    model = make([h.make_node("ZipMap", ["x"], ["z"], domain="ai.onnx.ml", classlabels_strings=["a", "b"])],
                 [h.make_tensor_value_info("x", T.FLOAT, ["n", 2])], [h.make_value_info("z", seq_map)], ml=True)
    x = np.array([[0.25, 0.75], [1, 0]], np.float32)
    with fastort.Engine(model) as engine:
        check_equal(engine, model, {"x": x})


# --------------------------------------------------------------- errors ----


@pytest.fixture(scope="module")
def seq_engine():
    model = make([h.make_node("SequenceLength", ["seq"], ["n"])], [seq_info("seq", T.FLOAT)],
                 [h.make_tensor_value_info("n", T.INT64, [])])
    with fastort.Engine(model) as engine:
        yield engine


def test_wrong_element_dtype_names_input_and_element(seq_engine) -> None:
    good = np.ones(2, np.float32)
    with pytest.raises(fastort.InvalidInputError, match=r"^input 'seq': element 2: expected float32, got int64$"):
        seq_engine.run({"seq": [good, good, np.ones(2, np.int64)]})
    with pytest.raises(fastort.InvalidInputError, match=r"input 'seq': element 1: expected dtype float32, got object"):
        seq_engine.run({"seq": [good, np.array(["a"], dtype=object)]})
    with pytest.raises(fastort.InvalidInputError, match=r"input 'seq': element 0: expected a numpy.ndarray, got list"):
        seq_engine.run({"seq": [[1.0, 2.0]]})
    with pytest.raises(fastort.InvalidInputError, match=r"input 'seq': element 1: got None, expected a numpy.ndarray of float32 \(it is not optional\)$"):
        seq_engine.run({"seq": [good, None]})
    # The same through the queue: refused at submit, nothing queued.
    with pytest.raises(fastort.InvalidInputError, match="element 2: expected float32, got int64"):
        seq_engine.submit({"seq": [good, good, np.ones(2, np.int64)]})
    assert seq_engine.run({"seq": [good]})["n"] == 1  # the engine still serves


def test_wrong_container_names_input_and_type(seq_engine) -> None:
    with pytest.raises(fastort.InvalidInputError,
                       match=r"input 'seq' is a seq\(tensor\(float\)\): expected a list or tuple of numpy arrays of "
                             r"float32, got dict"):
        seq_engine.run({"seq": {"a": np.ones(1, np.float32)}})
    with pytest.raises(fastort.InvalidInputError, match=r"input 'seq' is a seq\(tensor\(float\)\).*got ndarray"):
        seq_engine.run({"seq": np.ones((2, 3), np.float32)})
    with pytest.raises(fastort.InvalidInputError,
                       match=r"input 'seq' is a seq\(tensor\(float\)\), which is not optional: got None"):
        seq_engine.run({"seq": None})
    model = make([h.make_node("DictVectorizer", ["m"], ["y"], domain="ai.onnx.ml", string_vocabulary=["a"])],
                 [map_info("m", T.STRING, T.FLOAT)], [h.make_tensor_value_info("y", T.FLOAT, None)], ml=True)
    with fastort.Engine(model) as engine:
        for bad, got in ((np.ones(2, np.float32), "ndarray"), ([("a", 1.0)], "list")):
            with pytest.raises(fastort.InvalidInputError,
                               match=rf"input 'm' is a map\(string,tensor\(float\)\): expected a dict, got {got}"):
                engine.run({"m": bad})
        with pytest.raises(fastort.InvalidInputError,
                           match=r"input 'm': key 1 is int, expected str \(map\(string,tensor\(float\)\)\)"):
            engine.run({"m": {1: 2.0}})
        with pytest.raises(fastort.InvalidInputError, match=r"input 'm': value for key 'a' is str, expected a number"):
            engine.run({"m": {"a": "x"}})
        with pytest.raises(fastort.InvalidInputError, match="input 'm': value for key 'a' is bool"):
            engine.run({"m": {"a": True}})
    model = make([h.make_node("DictVectorizer", ["m"], ["y"], domain="ai.onnx.ml", int64_vocabulary=[1])],
                 [map_info("m", T.INT64, T.FLOAT)], [h.make_tensor_value_info("y", T.FLOAT, None)], ml=True)
    with fastort.Engine(model) as engine:
        with pytest.raises(fastort.InvalidInputError, match=r"input 'm': key 'a' is str, expected int"):
            engine.run({"m": {"a": 1.0}})
        with pytest.raises(fastort.InvalidInputError, match=r"input 'm': key 1.5 is float, expected int"):
            engine.run({"m": {1.5: 1.0}})
        with pytest.raises(fastort.InvalidInputError, match="does not fit in int64"):
            engine.run({"m": {2**70: 1.0}})


def test_none_for_a_tensor_input_says_it_is_not_optional() -> None:
    model = make([h.make_node("Neg", ["x"], ["y"])], [h.make_tensor_value_info("x", T.FLOAT, None)],
                 [h.make_tensor_value_info("y", T.FLOAT, None)])
    with fastort.Engine(model) as engine:
        with pytest.raises(fastort.InvalidInputError, match=r"^input 'x': got None, expected a numpy.ndarray of float32 \(it is not optional\)$"):
            engine.run({"x": None})


def test_request_bytes_bound_counts_sequence_elements() -> None:
    model = make([h.make_node("SequenceLength", ["s"], ["n"])], [seq_info("s", T.FLOAT)],
                 [h.make_tensor_value_info("n", T.INT64, [])])
    with fastort.Engine(model, max_request_bytes=1000) as engine:
        assert engine.run({"s": [np.ones(100, np.float32)] * 2})["n"] == 2
        with pytest.raises(fastort.RequestTooLargeError, match="input 's': element 2"):
            engine.run({"s": [np.ones(100, np.float32)] * 3})


def test_closed_engine_refuses(seq_engine) -> None:
    model = make([h.make_node("SequenceLength", ["s"], ["n"])], [seq_info("s", T.FLOAT)],
                 [h.make_tensor_value_info("n", T.INT64, [])])
    engine = fastort.Engine(model)
    engine.close()
    for call in (engine.run, engine.submit):
        with pytest.raises(fastort.EngineClosedError):
            call({"s": [np.ones(1, np.float32)]})
    with pytest.raises(fastort.EngineClosedError):
        asyncio.run(engine.run_async({"s": []}))


def test_bind_refuses_sequence_models(seq_engine) -> None:
    with pytest.raises(fastort.InvalidInputError, match="bind\\(\\) takes models whose inputs are tensors"):
        seq_engine.bind()


# -------------------------------------------------------------- batching ----


def test_batching_asked_for_serves_unbatched_with_the_reason() -> None:
    model = make([h.make_node("ConcatFromSequence", ["s"], ["c"], axis=0)], [seq_info("s", T.FLOAT)],
                 [h.make_tensor_value_info("c", T.FLOAT, None)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = fastort.Engine(model, max_batch_size=8, max_delay_us=5000)
    assert any("input 's' is a seq(tensor(float)): sequence, map and optional inputs are never merged into batches"
               in str(w.message) for w in caught)
    with engine:
        assert not engine.batching
        requests = [[np.full(i % 3 + 1, i, np.float32) for _ in range(i % 4)] for i in range(1, 40)]
        requests = [r for r in requests if r]
        futures = [engine.submit({"s": r}) for r in requests]
        results: List[Any] = [None] * len(requests)

        def worker(k: int) -> None:
            results[k] = engine.run({"s": requests[k]})

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r, f, res in zip(requests, futures, results):
            want = np.concatenate(r)
            assert same(f.result(timeout=30)["c"], want) and same(res["c"], want)
        stats = engine.stats()
        assert stats["batching"] is False and "never merged" in stats["unbatchable_reason"]
        assert stats["batches"] == stats["requests"]  # every request ran alone
