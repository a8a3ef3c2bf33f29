"""Pool + dynamic batching under concurrent clients, side by side, one run.

    .venv/bin/python bench/bench_batching.py            # ~2 min
    .venv/bin/python bench/bench_batching.py --sweep    # ~2 min: fastort configurations only

MLP 512->2048->2048->512 float32, dynamic batch dim. Closed-loop clients (Python
threads) each send batch-1 requests for a fixed time (after a short warm-up that
is not counted), against:
  - fastort: Engine(replicas=2, max_batch_size=32, max_delay_us=2000), engine.run
    (one intra-op thread per replica), and Engine(replicas=1) with 2 threads
  - one onnxruntime InferenceSession shared by the threads (sess.run)
  - a hand-rolled Python queue batcher in front of one InferenceSession
plus the offline single-call throughput of InferenceSession at batch 1, 32 and
128, and the C++ program (fastort_bench_batcher) driving fastort's pool +
batcher from C++ threads, without Python.

Each point is timed in alternating rounds (4 by default; the order of the
methods flips every round, and the offline numbers are taken in the rounds of
the largest client count), so that a noisy neighbour disturbs all methods
alike. The targets are checked there for the first fastort configuration:
>= 0.8x the offline batch-32 throughput, >= 3x the shared session; the ratio
per round is printed too (its spread shows how much the machine moved).

--sweep instead times fastort configurations (replicas, intra-op threads, global
thread pool, spinning, max_delay_us) at a few client counts, from Python and
from C++, to pick defaults.

Writes bench/out/batching.json (or batching_sweep.json) and bench/batching.png
(needs matplotlib; skipped with a message without it).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

import fastort
from fastort.bench import machine_info, native_binary

from fastort.bench.models import mlp_model

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = (512, 2048, 2048, 512)
DIM_IN, DIM_OUT = SIZES[0], SIZES[-1]
MAX_BATCH = 32


def build_mlp(sizes: Sequence[int] = SIZES) -> onnx.ModelProto:
    return mlp_model(sizes)


def machine() -> Dict[str, Any]:
    return {**machine_info(), "command": " ".join(sys.argv)}


def closed_loop(call: Callable[[np.ndarray], np.ndarray], clients: int, seconds: float,
                warmup: float = 0.3) -> Dict[str, Any]:
    """`clients` threads call `call` with their own batch-1 input, back to back;
    requests sent during the `seconds` after `warmup` are counted. Returns the
    raw latencies (s) and the window's length."""
    stop, measuring = threading.Event(), threading.Event()
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors: List[BaseException] = []

    def client(k: int) -> None:
        x = np.full((1, DIM_IN), 0.001 * (k + 1), np.float32)
        out = latencies[k]
        try:
            while not stop.is_set():
                counted = measuring.is_set()
                t0 = time.perf_counter()
                y = call(x)
                t1 = time.perf_counter()
                if counted:
                    out.append(t1 - t0)
                if y.shape != (1, DIM_OUT):
                    raise AssertionError(f"wrong output shape {y.shape}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    measuring.set()
    start = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return {"latencies": np.concatenate([np.asarray(x) for x in latencies]), "elapsed": elapsed}


def merge(clients: int, raws: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One point from the rounds of one method at one client count: throughput
    over all rounds; latency percentiles over all requests (Python) or the
    median of the rounds' percentiles (C++, which reports percentiles only)."""
    elapsed = sum(r["elapsed"] for r in raws)
    if "offline_samples" in raws[0]:
        point = {"samples_per_s": sum(r["offline_samples"] for r in raws) / elapsed}
    elif "latencies" in raws[0]:
        lat = np.concatenate([r["latencies"] for r in raws]) * 1e6
        point = {"samples_per_s": len(lat) / elapsed, "p50_us": float(np.percentile(lat, 50)),
                 "p99_us": float(np.percentile(lat, 99))}
    else:
        point = {"samples_per_s": sum(r["samples"] for r in raws) / elapsed,
                 "p50_us": float(np.median([r["p50_us"] for r in raws])),
                 "p99_us": float(np.median([r["p99_us"] for r in raws])),
                 "mean_batch": float(np.mean([r["mean_batch"] for r in raws]))}
    rounds = [(len(r["latencies"]) if "latencies" in r else r.get("samples", r.get("offline_samples", 0)))
              / r["elapsed"] for r in raws]
    point["per_round_samples_per_s"] = rounds
    point["best_round_samples_per_s"] = max(rounds)
    return {"clients": clients, **point}


def interleaved(methods: Dict[str, Callable[[int, float], Optional[Dict[str, Any]]]], clients: Sequence[int],
                seconds: float, rounds: int, show: Callable[[int, Dict[str, Dict[str, Any]]], None]
                ) -> Dict[str, List[Dict[str, Any]]]:
    """Times every method at every client count in `rounds` rounds of
    seconds / rounds each; at each client count the methods take turns (the
    order flips every round), so that a noisy neighbour disturbs them alike."""
    out: Dict[str, List[Dict[str, Any]]] = {name: [] for name in methods}
    for n in clients:
        raws: Dict[str, List[Dict[str, Any]]] = {name: [] for name in methods}
        for r in range(rounds):
            names = list(methods) if r % 2 == 0 else list(reversed(methods))
            for name in names:
                raw = methods[name](n, seconds / rounds)
                if raw is not None:
                    raws[name].append(raw)
        row = {name: merge(n, rs) for name, rs in raws.items() if rs}
        for name, point in row.items():
            out[name].append(point)
        show(n, row)
    return {name: points for name, points in out.items() if points}


class PythonBatcher:
    """What people write by hand: a queue, a thread that concatenates up to
    max_batch requests (waiting at most max_delay for more), one sess.run, and
    results handed back through events."""

    def __init__(self, sess: ort.InferenceSession, max_batch: int = MAX_BATCH, max_delay: float = 0.002) -> None:
        self.sess, self.max_batch, self.max_delay = sess, max_batch, max_delay
        self.q: "queue.Queue[dict]" = queue.Queue()
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        slot: Dict[str, Any] = {"x": x, "event": threading.Event()}
        self.q.put(slot)
        slot["event"].wait()
        if "error" in slot:
            raise slot["error"]
        return slot["y"]

    def loop(self) -> None:
        while not self.stop:
            try:
                first = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.perf_counter() + self.max_delay
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(self.q.get(timeout=remaining))
                except queue.Empty:
                    break
            try:
                y = self.sess.run(["y"], {"x": np.concatenate([s["x"] for s in batch])})[0]
                for i, s in enumerate(batch):
                    s["y"] = y[i : i + 1]
            except Exception as e:  # pragma: no cover - handed to the callers
                for s in batch:
                    s["error"] = e
            for s in batch:
                s["event"].set()

    def close(self) -> None:
        self.stop = True
        self.thread.join()


def offline(sess: ort.InferenceSession, batch: int, seconds: float) -> Dict[str, Any]:
    """One caller, back-to-back sess.run calls on `batch` rows."""
    x = np.random.default_rng(0).standard_normal((batch, DIM_IN)).astype(np.float32)
    for _ in range(3):
        sess.run(["y"], {"x": x})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(["y"], {"x": x})
        n += 1
    return {"offline_samples": n * batch, "elapsed": time.perf_counter() - start}


def engine_for(path: str, cfg: Dict[str, Any], max_delay_us: int) -> fastort.Engine:
    return fastort.Engine(path, replicas=cfg["replicas"], intra_op_threads=cfg.get("intra", 0),
                          use_global_thread_pool=cfg.get("global_pool", False),
                          session_config=cfg.get("session_config"), max_batch_size=MAX_BATCH,
                          max_delay_us=cfg.get("max_delay_us", max_delay_us), max_queue=4096)


def cxx_method(path: str, cfg: Dict[str, Any], max_delay_us: int
               ) -> Optional[Callable[[int, float], Optional[Dict[str, Any]]]]:
    """A method that runs fastort_bench_batcher (C++ client threads, no Python)
    for one client count, or None when the program was not built."""
    binary = native_binary("fastort_bench_batcher")
    if not binary:
        return None
    cmd = [binary, fastort.runtime_info()["library_path"], path, "--dim", str(DIM_IN),
           "--replicas", str(cfg["replicas"]), "--max-batch", str(MAX_BATCH),
           "--max-delay-us", str(cfg.get("max_delay_us", max_delay_us))]
    if cfg.get("global_pool"):
        cmd.append("--global-pool")
    else:
        cmd += ["--intra-threads", str(cfg.get("intra", 1))]
    for k, v in (cfg.get("session_config") or {}).items():
        cmd += ["--config", f"{k}={v}"]

    def run(clients: int, seconds: float) -> Optional[Dict[str, Any]]:
        proc = subprocess.run(cmd + ["--clients", str(clients), "--seconds", str(seconds)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            print(f"(the C++ program failed: {proc.stderr.strip()})")
            return None
        p = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
        p["elapsed"] = p["samples"] / p["samples_per_s"] if p["samples_per_s"] else seconds
        return p

    return run


def cell(p: Dict[str, float]) -> str:
    return f"{p['samples_per_s']:>8,.0f}/s {p['p50_us'] / 1e3:>5.2f}/{p['p99_us'] / 1e3:>6.2f} ms"


def plot(results: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; .venv/bin/pip install matplotlib)")
        return False
    clients = results["clients"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, series in results["concurrent"].items():
        style = "--" if "C++" in name else "-"
        xs = [p["clients"] for p in series]
        a.plot(xs, [p["samples_per_s"] for p in series], style, marker="o", label=name)
        b.plot(xs, [p["p99_us"] / 1000 for p in series], style, marker="o", label=name)
    for label, value in results["offline"].items():
        a.axhline(value, linestyle=":", linewidth=1, color="gray")
        a.annotate(f"offline InferenceSession, {label}", (clients[0], value), fontsize=7, color="gray", va="bottom")
    for ax, title, ylabel in ((a, "throughput", "samples/s"), (b, "p99 latency", "ms (log)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.set_xlabel("concurrent clients (closed loop, batch-1 requests)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"MLP 512-2048-2048-512: {title}")
        ax.grid(alpha=0.3)
    b.set_yscale("log")
    a.legend(fontsize=7)
    m = results["machine"]
    fig.suptitle(f"fastort {m['fastort']} vs onnxruntime {m['onnxruntime']}, {m['cores']} cores ({m['cpu']})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_json(name: str, results: dict) -> str:
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    path = os.path.join(HERE, "out", name)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    return path


def python_method(call: Callable[[np.ndarray], np.ndarray]) -> Callable[[int, float], Dict[str, Any]]:
    return lambda clients, seconds: closed_loop(call, clients, seconds)


def main_run(args: argparse.Namespace, path: str, clients: List[int]) -> int:
    results: dict = {"machine": machine(), "config": vars(args), "clients": clients, "offline": {},
                     "concurrent": {}}
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])  # default threads: one per core

    main_cfg = {"replicas": args.replicas, "intra": args.intra_threads}
    engine = engine_for(path, main_cfg, args.max_delay_us)
    alt = engine_for(path, {"replicas": 1, "intra": 2}, args.max_delay_us) if not args.no_alt else None
    hand = PythonBatcher(sess)
    ours = f"fastort replicas={args.replicas} x {args.intra_threads} thread(s)"
    top_n = max(clients)
    methods: Dict[str, Callable[[int, float], Optional[Dict[str, Any]]]] = {
        ours: python_method(lambda x: engine.run({"x": x})["y"]),
        # Offline single-caller throughput, timed in the same rounds as the
        # largest client count (right after fastort: the targets' ratios per
        # round compare numbers taken seconds apart).
        "offline batch 32": lambda n, secs: offline(sess, 32, secs) if n == top_n else None,
    }
    if alt is not None:
        methods["fastort replicas=1 x 2 threads"] = python_method(lambda x: alt.run({"x": x})["y"])
    methods["shared InferenceSession"] = python_method(lambda x: sess.run(["y"], {"x": x})[0])
    methods["Python queue batcher"] = python_method(hand)
    cxx = cxx_method(path, main_cfg, args.max_delay_us)
    cxx_name = f"C++ clients, fastort replicas={args.replicas} x {args.intra_threads} (no Python)"
    if cxx is not None:
        methods[cxx_name] = cxx
    else:
        print("(fastort_bench_batcher is not built: no C++ numbers)")
    for b in (1, 128):
        methods[f"offline batch {b}"] = (
            lambda n, secs, b=b: offline(sess, b, secs) if n == top_n else None)

    print(f"\nclosed-loop clients, {args.seconds:g} s per point in {args.rounds} alternating rounds: "
          "samples/s, p50/p99 latency")
    shown = [name for name in methods if not name.startswith("offline")]
    print(f"{'clients':>7}  " + "  ".join(f"{name[:32]:>32}" for name in shown))

    def show(n: int, row: Dict[str, Dict[str, Any]]) -> None:
        print(f"{n:>7}  " + "  ".join(f"{cell(row[name]) if name in row else '-':>32}" for name in shown),
              flush=True)

    measured = interleaved(methods, clients, args.seconds, args.rounds, show)
    for b in (1, 32, 128):
        point = measured.pop(f"offline batch {b}")[0]
        results["offline"][f"batch {b}"] = point["samples_per_s"]
        results["offline_rounds"] = {**results.get("offline_rounds", {}),
                                     f"batch {b}": point["per_round_samples_per_s"]}
        print(f"offline InferenceSession.run (one caller, default threads), batch {b:>3}: "
              f"{point['samples_per_s']:>9,.0f} samples/s (rounds: "
              + ", ".join(f"{x:,.0f}" for x in point["per_round_samples_per_s"]) + ")")
    results["concurrent"] = measured
    hand.close()
    results["fastort_stats"] = {k: v for k, v in engine.stats().items() if k != "batch_size_histogram"}
    engine.close()
    if alt is not None:
        alt.close()
    if cxx_name in results["concurrent"]:
        print("C++ mean batch sizes: " + ", ".join(
            f"{p['clients']} clients {p['mean_batch']:.1f}" for p in results["concurrent"][cxx_name]))

    top = clients.index(top_n)
    b32 = results["offline"]["batch 32"]
    b32_rounds = results["offline_rounds"]["batch 32"]
    shared_point = results["concurrent"]["shared InferenceSession"][top]
    shared = shared_point["samples_per_s"]
    checks = []
    for name in results["concurrent"]:
        if "fastort" not in name:
            continue
        point = results["concurrent"][name][top]
        got = point["samples_per_s"]
        binding = name == ours  # the targets are set for the default configuration, Python clients
        # Ratio per round too (the round's own offline / shared-session numbers):
        # its spread shows how much the machine moved during the run.
        r_b32 = [a / b for a, b in zip(point["per_round_samples_per_s"], b32_rounds)]
        r_sh = [a / b for a, b in zip(point["per_round_samples_per_s"], shared_point["per_round_samples_per_s"])]
        for text, ok, per_round in ((f">= 0.8x offline batch-32: {got / b32:.2f}x", got >= 0.8 * b32, r_b32),
                                    (f">= 3x shared session: {got / shared:.2f}x", got >= 3 * shared, r_sh)):
            checks.append({"method": name, "binding": binding, "pass": ok, "per_round": per_round,
                           "median_per_round": float(np.median(per_round)),
                           "check": f"{top_n} clients: {name} {text} (per round "
                                    f"{', '.join(f'{x:.2f}' for x in per_round)}; median {np.median(per_round):.2f})"})
    print("\ntargets:")
    for c in checks:
        print(f"   {'PASS' if c['pass'] else 'FAIL'}  {c['check']}{'' if c['binding'] else '  (for information)'}")
    results["targets"] = checks
    print(f"results: {write_json(args.json or 'batching.json', results)}")
    if not args.no_plot and plot(results, os.path.join(HERE, "batching.png")):
        print("plot: bench/batching.png")
    return 0


SWEEP = [
    {"label": "replicas=2 x 1 thread", "replicas": 2, "intra": 1},
    {"label": "replicas=1 x 2 threads", "replicas": 1, "intra": 2},
    {"label": "replicas=1 x 2 threads, no spinning", "replicas": 1, "intra": 2,
     "session_config": {"session.intra_op.allow_spinning": "0"}},
    {"label": "replicas=2, global pool (2 threads, no spin)", "replicas": 2, "global_pool": True},
    {"label": "replicas=2 x 2 threads (oversubscribed)", "replicas": 2, "intra": 2},
    {"label": "replicas=2 x 1 thread, max_delay 500 us", "replicas": 2, "intra": 1, "max_delay_us": 500},
    {"label": "replicas=2 x 1 thread, max_delay 5000 us", "replicas": 2, "intra": 1, "max_delay_us": 5000},
]


def sweep(args: argparse.Namespace, path: str, clients: List[int]) -> int:
    results: dict = {"machine": machine(), "config": vars(args), "clients": clients, "points": {}}
    engines = {cfg["label"]: engine_for(path, cfg, args.max_delay_us) for cfg in SWEEP}
    methods: Dict[str, Callable[[int, float], Optional[Dict[str, Any]]]] = {}
    for cfg in SWEEP:
        engine = engines[cfg["label"]]
        methods[f"{cfg['label']} | Python"] = python_method(lambda x, e=engine: e.run({"x": x})["y"])
        cxx = cxx_method(path, cfg, args.max_delay_us)
        if cxx is not None:
            methods[f"{cfg['label']} | C++"] = cxx
    print(f"fastort configurations, {args.seconds:g} s per point in {args.rounds} alternating rounds: "
          "samples/s, p50/p99 latency")

    def show(n: int, row: Dict[str, Dict[str, Any]]) -> None:
        print(f"\n{n} clients")
        for name, point in row.items():
            label, side = name.split(" | ")
            print(f"  {label:<46}{side:>7}  {cell(point)}   best round {point['best_round_samples_per_s']:>8,.0f}/s",
                  flush=True)

    results["points"] = interleaved(methods, clients, args.seconds, args.rounds, show)
    for engine in engines.values():
        engine.close()
    print(f"results: {write_json(args.json or 'batching_sweep.json', results)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="time per point, all rounds together (default 3; --sweep: 1.5)")
    parser.add_argument("--clients", default=None, help="client counts (default 1,4,16,64; --sweep: 4,16,64)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--intra-threads", type=int, default=1, help="intra-op threads per fastort replica")
    parser.add_argument("--max-delay-us", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds per point (default 4; --sweep 3)")
    parser.add_argument("--no-alt", action="store_true", help="skip the replicas=1 x 2 threads series")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--json", default=None, help="file name under bench/out/ (default batching.json, "
                        "batching_sweep.json)")
    parser.add_argument("--sweep", action="store_true", help="time fastort configurations instead")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 1.5 if args.sweep else 3.0
    if args.rounds is None:
        args.rounds = 3 if args.sweep else 4
    if args.clients is None:
        args.clients = "4,16,64" if args.sweep else "1,4,16,64"
    clients = [int(c) for c in args.clients.split(",") if c]
    print(f"{os.cpu_count()} cores ({machine()['cpu']}), onnxruntime {ort.__version__}, fastort {fastort.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mlp.onnx")
        onnx.save(build_mlp(), path)
        return sweep(args, path, clients) if args.sweep else main_run(args, path, clients)


if __name__ == "__main__":
    sys.exit(main())
