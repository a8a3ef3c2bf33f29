"""The search: measure candidates cheapest first under the user's load, with
a plain-onnxruntime baseline measured between them, judge each against the
targets (hard constraints), and return the best feasible one, or the closest
one with the reasons every candidate missed. Never ends without a result."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..engine import Engine
from ..engine.manifest import is_package, load_package
from ..errors import ConfigError, FastortError, ModelNotFoundError
from . import space, variants
from .config import Budget, Load, Targets, check_allow, check_objective
from .inputs import InputSet, make_inputs
from .load import Measurement, OrtTarget, measure
from .result import CandidateResult, TuneResult, rank_key
from .space import Config

DEFAULT_ALLOW = ("threads", "replicas", "batching", "precision", "quantize", "optimize")
#: Share of the time budget kept to re-measure the leaders at the end: at
#: least this, or the time the re-measurements are expected to take (from the
#: measurements so far), up to CONFIRM_MAX_SHARE.
CONFIRM_SHARE = 0.15
CONFIRM_MAX_SHARE = 0.35
#: How a budget is split between the stages still to run (batching pays most often under load).
STAGE_WEIGHTS = {"threads": 2.0, "replicas": 2.0, "batching": 3.0, "graph": 1.0, "variants": 2.0}
#: A candidate must beat fastort's defaults by more than this (relative) to
#: replace them: smaller gaps are within the noise of a shared machine, and a
#: lucky window must not ship a worse configuration.
NOISE_MARGIN = 0.03


def _rss_mb() -> Optional[float]:
    """Resident memory of this process (Linux), MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _machine() -> Dict[str, Any]:
    from ..bench import machine_info

    info = machine_info()
    info["cores"] = space.cores()
    return info


def _as(value: Any, cls: Any, what: str) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls(**value)
        except TypeError as e:
            raise ConfigError(f"{what}: {e}") from None
    raise ConfigError(f"{what} must be a {cls.__name__} (or a dict of its fields), got {type(value).__name__}")


def _model_path(model: Any, folder: str) -> Tuple[str, str]:
    """(path of the ONNX file to tune, its description)."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if is_package(path):
            return load_package(path)[0], path
        if not os.path.exists(path):
            raise ModelNotFoundError(f"model file not found: {path}")
        return path, path
    import onnx

    if isinstance(model, (bytes, bytearray, memoryview)):
        proto = onnx.load_from_string(bytes(model))
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        raise ConfigError(f"model must be an .onnx path, a package directory, bytes or an onnx.ModelProto, "
                          f"got {type(model).__name__}")
    path = os.path.join(folder, "original.onnx")
    onnx.save_model(proto, path)
    return path, f"<{proto.graph.name or 'model'}>"


class _Run:
    """State of one tuning run (the candidates, the baseline, the clock)."""

    def __init__(self, path: str, inputs: InputSet, load: Load, targets: Targets, budget: Budget,
                 objective: str, progress: bool, with_baseline: bool) -> None:
        self.path, self.inputs, self.load, self.targets = path, inputs, load, targets
        self.budget, self.objective, self.with_baseline = budget, objective, with_baseline
        self.start = time.perf_counter()
        self.deadline = self.start + budget.seconds
        self.durations: List[float] = []  # seconds each measurement took (candidates and baselines)
        self.candidates: List[CandidateResult] = []
        self.baseline: List[Tuple[int, Measurement]] = []
        self.skipped: List[Tuple[str, str]] = []
        self.exhausted = False
        self.since_baseline = 0
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc="fastort tune", unit="cand", disable=not progress, leave=False)

    @property
    def stages_deadline(self) -> float:
        """The stages end here; the rest of the budget re-measures the leaders
        (and the defaults) between two baselines, sized from how long the
        measurements so far took (many clients take longer to start and stop)."""
        if self.budget.confirm <= 1:
            return self.deadline
        reserve = CONFIRM_SHARE * self.budget.seconds
        if self.durations:
            expected = (self.budget.confirm + 1 + (2 if self.with_baseline else 0)) * (
                sum(self.durations) / len(self.durations))
            reserve = min(max(reserve, expected), CONFIRM_MAX_SHARE * self.budget.seconds)
        return self.deadline - reserve

    def out_of_budget(self) -> bool:
        if not self.candidates:
            return False  # the first candidate (fastort's defaults) always runs
        if time.perf_counter() >= self.stages_deadline:
            return True
        return self.budget.trials is not None and len(self.candidates) >= self.budget.trials

    def measure_baseline(self) -> None:
        if not self.with_baseline:
            return
        t0 = time.perf_counter()
        target = OrtTarget(self.path, workers=min(64, self.load.concurrency))
        try:
            m = measure(target, self.inputs, self.load, self.budget, self.deadline)
        finally:
            target.close()
        self.durations.append(time.perf_counter() - t0)
        self.baseline.append((len(self.candidates), m))
        self.since_baseline = 0

    def latest_baseline(self) -> Optional[float]:
        for _, m in reversed(self.baseline):
            if m.error is None and m.throughput > 0:
                return m.throughput
        return None

    def evaluate(self, config: Config, stage: str, variant: variants.Variant) -> Optional[CandidateResult]:
        """Measures one candidate; None when the budget is spent."""
        if self.out_of_budget():
            self.exhausted = True
            self.skipped.append((config.label(), "budget spent"))
            return None
        if self.with_baseline and self.since_baseline >= self.budget.baseline_every > 0:
            self.measure_baseline()
        c = CandidateResult(config=config, stage=stage, error=variant.error, error_ok=variant.error_ok,
                            error_detail=variant.error_detail, size_bytes=variant.size_bytes,
                            notes=list(variant.notes), index=len(self.candidates), model_path=variant.path)
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        engine = None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                engine = Engine(variant.path, **config.engine_kwargs())
            c.notes.extend(str(w.message) for w in caught)
            engine.run(self.inputs.requests[0])
            m = measure(engine, self.inputs, self.load, self.budget, self.stages_deadline)
            rss1 = _rss_mb()
            c.measurement = m
            c.memory_mb = None if rss0 is None or rss1 is None else max(0.0, rss1 - rss0)
            if m.error is not None:
                c.failed = m.error
        except (FastortError, MemoryError) as e:
            c.failed = f"{type(e).__name__}: {e}"
        finally:
            if engine is not None:
                engine.close()
        self.durations.append(time.perf_counter() - t0)
        c.baseline_throughput = self.latest_baseline()
        c.judge(self.targets)
        self.candidates.append(c)
        self.since_baseline += 1
        best = self.best()
        self.bar.update(1)
        if best is not None and best.measurement is not None:
            self.bar.set_postfix_str(f"best: {best.config.label()} {best.measurement.throughput:,.0f} req/s"
                                     + (f" ({best.ratio:.2f}x ort)" if best.ratio else "")
                                     + ("" if best.feasible else " [misses targets]"))
        return c

    def run_stage(self, configs: Sequence[Config], stage: str, variant: variants.Variant,
                  share: float = 1.0) -> None:
        """Measures ``configs`` in order, within ``share`` (a fraction) of what
        is left of the budget, so that a long early stage cannot starve
        batching or the variants; what a stage leaves unused passes on."""
        self.bar.total += len(configs)
        self.bar.refresh()
        share = min(1.0, max(0.0, share))
        stage_end = time.perf_counter() + max(0.0, self.stages_deadline - time.perf_counter()) * share
        quota = None if self.budget.trials is None else max(1, round((self.budget.trials - len(self.candidates)) * share))
        for i, cfg in enumerate(configs):
            if i > 0 and ((quota is not None and i >= quota) or time.perf_counter() >= stage_end):
                self.exhausted = True
                self.skipped.extend((c.label(), f"{stage} stage's share of the budget spent") for c in configs[i:])
                return
            if self.evaluate(cfg, stage, variant) is None:
                self.skipped.extend((c.label(), "budget spent") for c in configs[i + 1:])
                return

    def best(self, pool: Optional[Sequence[CandidateResult]] = None) -> Optional[CandidateResult]:
        ranked = sorted(pool if pool is not None else self.candidates, key=lambda c: rank_key(c, self.objective))
        return ranked[0] if ranked and ranked[0].measurement is not None else None

    def best_config(self, fallback: Config) -> Config:
        b = self.best()
        return b.config if b is not None else fallback

    def confirm(self) -> bool:
        """Re-measures the leading candidates (best first, then the defaults,
        between two baselines) so that one lucky window on a noisy machine does
        not pick the winner: their ratio becomes the mean over both runs and
        their p99 the worse of the two. Returns whether every leader was
        re-measured (False: the budget cut some, so the first runs decide)."""
        ranked = [c for c in sorted(self.candidates, key=lambda c: rank_key(c, self.objective))
                  if c.measurement is not None and c.failed is None][:self.budget.confirm]
        default = self.candidates[0] if self.candidates else None
        if (default is not None and default not in ranked and default.measurement is not None
                and default.failed is None and ranked):
            ranked.append(default)  # the defaults are what a winner must beat: measure them again too
        if len(ranked) < 2:
            return False
        if time.perf_counter() >= self.deadline:
            self.skipped.append(("confirmation of the leaders", "budget spent"))
            return False
        self.bar.total += len(ranked)
        self.bar.refresh()
        if self.with_baseline:
            self.measure_baseline()
        before = self.latest_baseline()
        runs: List[Tuple[CandidateResult, Measurement]] = []
        complete = True
        for c in ranked:
            if time.perf_counter() >= self.deadline:
                complete = False
                c.notes.append("not re-measured with the other leaders (budget spent)")
                self.skipped.append((f"confirmation of {c.config.label()}", "budget spent"))
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                engine = Engine(c.model_path, **c.config.engine_kwargs())
            try:
                m = measure(engine, self.inputs, self.load, self.budget, self.deadline)
            finally:
                engine.close()
            self.bar.update(1)
            if m.error is None:
                runs.append((c, m))
            else:
                # a leader whose second run failed cannot win over those re-measured
                c.notes.append(f"its second run failed ({m.error}), so it cannot win over the re-measured leaders")
        if self.with_baseline:
            self.measure_baseline()
        after = self.latest_baseline()
        bases = [b for b in (before, after) if b]
        base = sum(bases) / len(bases) if bases else None
        for c, m in runs:
            c.repeats.append(m)
            c.repeat_ratios.append(m.throughput / base if base else float("nan"))
        return complete

    def finish(self) -> None:
        """Final baseline, then each candidate's ratio against the mean of the
        baselines measured just before and just after it."""
        if self.with_baseline and self.since_baseline > 0 and time.perf_counter() < self.deadline + 30:
            self.measure_baseline()
        ok = [(i, m.throughput) for i, m in self.baseline if m.error is None and m.throughput > 0]
        for c in self.candidates:
            before = [t for i, t in ok if i <= c.index]
            after = [t for i, t in ok if i > c.index]
            near = ([before[-1]] if before else []) + ([after[0]] if after else [])
            c.baseline_throughput = sum(near) / len(near) if near else None
        self.bar.close()


def _prefer_default(winner: Optional[CandidateResult], default: Optional[CandidateResult],
                    objective: str) -> Optional[CandidateResult]:
    """The defaults (the first candidate) when ``winner`` beats them by no more
    than :data:`NOISE_MARGIN`: a configuration is only worth writing down when
    it is measurably better than none."""
    if (winner is None or default is None or winner is default or not default.feasible
            or default.measurement is None or winner.measurement is None):
        return winner
    if objective == "latency":
        better = default.worst_p99_ms > winner.worst_p99_ms * (1.0 + NOISE_MARGIN)
    else:
        w = winner.ratio if winner.ratio is not None else winner.measurement.throughput
        d = default.ratio if default.ratio is not None else default.measurement.throughput
        better = w > d * (1.0 + NOISE_MARGIN)
    if better:
        return winner
    default.notes.append(f"kept fastort's defaults: the best other candidate ({winner.config.label()}) was "
                         f"within {NOISE_MARGIN:.0%}, the measurement noise")
    return default


def tune(
    model: Any,
    *,
    inputs: Any = None,
    dims: Optional[Mapping[str, int]] = None,
    allow_default_dims: bool = False,
    clients: Optional[int] = None,
    arrival_rate: Optional[float] = None,
    targets: Union[Targets, Mapping[str, Any], None] = None,
    budget: Union[Budget, Mapping[str, Any], None] = None,
    providers: Optional[Sequence[Any]] = None,
    allow: Sequence[str] = DEFAULT_ALLOW,
    objective: Optional[str] = None,
    calibration: Any = None,
    output: Optional[Union[str, "os.PathLike[str]"]] = None,
    overwrite: bool = False,
    baseline: bool = True,
    progress: bool = True,
) -> TuneResult:
    """Finds the fastest configuration of ``model`` that meets ``targets`` under
    the given load, measured on this machine.

    Args:
        model: an .onnx path, a package directory, bytes or an onnx.ModelProto.
        inputs: sample requests: arrays (dict/list/tuple/array, cut into 1-row
            requests), an .npy/.npz path, a list of request dicts (shapes may
            vary), a generator, or a callable returning a request. None:
            synthesised from the declared shapes (the result says so).
        dims: sizes of symbolic dims for synthetic inputs, ``{"seq": 128}``
            (or ``{"input:axis": n}`` for unnamed dims); a free leading dim is
            the request's rows (1 unless given).
        allow_default_dims: accept 1 for symbolic dims not in ``dims``.
        clients / arrival_rate: closed-loop clients, or open-loop requests/s
            (one of them; default 1 client).
        targets: :class:`Targets` (hard constraints).
        budget: :class:`Budget` (time, trials, measurement windows).
        providers: providers to try (default: CPU plus what ``fastort.devices()``
            reports, when available).
        allow: knobs to search: "threads", "replicas", "batching", "precision",
            "quantize", "optimize".
        objective: "throughput" (most requests/s; the default with clients=)
            or "latency" (least p99; the default with arrival_rate=, where
            every candidate that keeps up serves the same rate).
        calibration: data for static int8 quantization (default: the inputs,
            when they are real).
        output: write the winner as a package there (see :meth:`TuneResult.save`).
        baseline: measure a plain onnxruntime InferenceSession between candidates.
        progress: show a progress bar with the current best.
    """
    targets_: Targets = _as(targets, Targets, "targets")
    budget_: Budget = _as(budget, Budget, "budget")
    targets, budget = targets_, budget_
    allow = check_allow(allow)
    notes: List[str] = []
    if objective is None:
        objective = "latency" if arrival_rate is not None and clients is None else "throughput"
    objective = check_objective(objective)
    if clients is None and arrival_rate is None:
        clients = 1
        notes.append("no load given: measured with 1 closed-loop client (give clients= or arrival_rate=)")
    load = Load(clients=clients, arrival_rate=arrival_rate)
    if providers is not None and (isinstance(providers, str) or not list(providers)):
        providers = [providers] if isinstance(providers, str) and providers else None
        if providers is None:
            raise ConfigError("providers must be a non-empty sequence of providers to try")
    if output is not None and os.path.exists(output) and os.listdir(output) and not overwrite:
        raise ConfigError(f"output directory {os.fspath(output)} is not empty: pass overwrite=True to replace it")

    tmp = tempfile.TemporaryDirectory(prefix="fastort-tune-")
    try:
        path, source = _model_path(model, tmp.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = Engine(path, intra_op_threads=1)
        with probe:
            specs, out_specs = probe.inputs, probe.outputs
        inputs_set = make_inputs(inputs, specs, dims, allow_default_dims)
        notes = inputs_set.notes + notes
        batchable = all(s.shape and not isinstance(s.shape[0], int) for s in list(specs) + list(out_specs))
        provs, prov_notes = space.available_providers(providers)
        notes += prov_notes
        n_cores = space.cores()
        run = _Run(path, inputs_set, load, targets_, budget_, objective, progress, baseline)
        original = variants.Variant("original", path, os.path.getsize(path))
        all_variants: Dict[str, str] = {"original": path}
        try:
            run.measure_baseline()
            default = Config(provider=provs[0])
            run.run_stage([default], "default", original)
            want_batching = "batching" in allow and load.concurrency > 1
            if "batching" in allow and not batchable:
                want_batching = False
                notes.append("batching not tried: the model has no dynamic batch dim on every input and output")
            plan = variants.plan(allow, provs[0], inputs_set.synthetic, calibration)
            stages = ["threads"] + (["replicas"] if "replicas" in allow and load.concurrency > 1 else []) \
                + (["batching"] if want_batching else []) + (["graph"] if "optimize" in allow else []) \
                + (["variants"] if any(reason is None for _, reason in plan) else [])
            for k, stage_name in enumerate(stages):
                share = STAGE_WEIGHTS[stage_name] / sum(STAGE_WEIGHTS[s] for s in stages[k:])
                best = run.best_config(default)
                if stage_name == "threads":
                    configs = [c for c in space.thread_stage(default, provs, n_cores, allow) if c != default]
                elif stage_name == "replicas":
                    configs = space.replica_stage(best, n_cores, load.concurrency)
                elif stage_name == "batching":
                    configs = space.batching_stages(best, default, load.concurrency, inputs_set.rows_per_request)
                elif stage_name == "graph":
                    configs = space.graph_stage(best)
                else:
                    break
                run.run_stage(configs, stage_name, original, share)
            best = run.best_config(default)
            batches = inputs_set.validation_batches(batchable)
            for name, reason in variants.plan(allow, best.provider, inputs_set.synthetic, calibration):
                if reason is not None:
                    run.skipped.append((name, reason))
                    continue
                if run.out_of_budget():
                    run.exhausted = True
                    run.skipped.append((name, "budget spent"))
                    continue
                try:
                    vpath, vnotes = variants.build(name, path, tmp.name, batches, calibration, best.provider)
                    err, ok, detail = variants.error_of(path, vpath, batches, targets_)
                except (FastortError, ValueError, RuntimeError) as e:
                    run.skipped.append((name, f"could not be made: {type(e).__name__}: {str(e).splitlines()[0]}"))
                    continue
                all_variants[name] = vpath
                v = variants.Variant(name, vpath, os.path.getsize(vpath), err, ok, detail, vnotes)
                from dataclasses import replace

                run.run_stage([replace(best, variant=name)], "variants", v)
            confirmed = run.confirm()
        finally:
            run.finish()
        for c in run.candidates:
            c.judge(targets_)
        # once every leader was re-measured, the winner is one of them: their
        # ratios average two runs, a first run alone may have been a lucky
        # window. When the budget cut the confirmation, every candidate competes
        # (the re-measured ones on the mean of their runs): the defaults' second
        # run alone must not win over a leader that had no time for its own.
        pool = [c for c in run.candidates if c.repeats and confirmed] or run.candidates
        ranked = sorted(pool, key=lambda c: rank_key(c, objective))
        winner = ranked[0] if ranked and ranked[0].measurement is not None and ranked[0].failed is None else None
        winner = _prefer_default(winner, run.candidates[0] if run.candidates else None, objective)
        if inputs_set.synthetic and winner is not None:
            winner.notes.append("measured on synthetic inputs")
        result = TuneResult(
            model=source, winner=winner, feasible=bool(winner and winner.feasible), candidates=run.candidates,
            baseline=[m for _, m in run.baseline], synthetic_inputs=inputs_set.synthetic,
            inputs=inputs_set.description, load=load, targets=targets_, budget=budget_, objective=objective,
            machine=_machine(), elapsed_s=time.perf_counter() - run.start, budget_exhausted=run.exhausted,
            skipped=run.skipped, notes=notes, variant_paths=all_variants, _tmp=tmp)
        weakref.finalize(result, tmp.cleanup)
    except BaseException:
        tmp.cleanup()
        raise
    if output is not None:
        result.save(output, overwrite=overwrite)
    return result
