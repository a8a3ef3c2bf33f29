"""A preparation step never silences the rest of the process: another thread's
prints and log lines during ``quantize()`` all arrive, and the tool's own chatter
(onnxruntime's calibrators print to stdout) goes to ``fastort.tools.*`` loggers."""

from __future__ import annotations

import logging
import sys
import threading

import fastort

import prep_models


def _chatter(stop: threading.Event, sent: "list[int]") -> None:
    log = logging.getLogger("test.other_thread")
    i = 0
    while not stop.is_set() or i < 20:
        print(f"other-thread print {i}")
        log.warning("other-thread log %d", i)
        sent.append(i)
        i += 1
        stop.wait(0.002)


def test_other_threads_lose_nothing_while_quantizing(tmp_path, capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    model, calib = prep_models.mlp(), prep_models.mlp_inputs(64)
    root_level, stdout = logging.getLogger().level, sys.stdout
    stop, sent = threading.Event(), []
    thread = threading.Thread(target=_chatter, args=(stop, sent))
    thread.start()
    try:
        # entropy calibration: onnxruntime's HistogramCalibrater print()s its progress
        for mode, extra in (("static", {"calibration": calib, "method": "entropy"}), ("dynamic", {})):
            fastort.quantize(model, tmp_path / f"{mode}.onnx", mode=mode, measure=False,
                             inputs=prep_models.mlp_inputs(8), **extra)
            assert logging.getLogger().level == root_level and sys.stdout is stdout
    finally:
        stop.set()
        thread.join()
    out = capsys.readouterr().out
    printed = [line for line in out.splitlines() if line.startswith("other-thread print")]
    logged = [r for r in caplog.records if r.name == "test.other_thread"]
    assert len(sent) >= 20
    assert len(printed) == len(sent), f"{len(sent) - len(printed)} of {len(sent)} prints lost"
    assert len(logged) == len(sent), f"{len(sent) - len(logged)} of {len(sent)} log lines lost"
    # the calibrator's prints are records of fastort's tool loggers, not lines on stdout
    assert "Finding optimal threshold" not in out
    tool = [r for r in caplog.records if r.name.startswith("fastort.tools.onnxruntime.quantization")]
    assert any("optimal threshold" in r.getMessage() for r in tool), [r.getMessage() for r in tool][:5]
