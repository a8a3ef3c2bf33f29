// fastort._core.Engine: the core's Engine (cpp/src/engine.cpp) with Python
// arguments and results. The GIL is released while onnxruntime loads or runs a
// model and while a caller waits for a queued request.
#include <chrono>

#include "bind.h"
#include "fastort/completion.h"
#include "fastort/engine.h"
#include "fastort/errors.h"

namespace fastort {
namespace bind {
namespace {

// The inputs of one request and the Python arrays they point into; dropped
// with the GIL wherever the last reference goes.
struct HeldInputs {
  std::vector<Held> held;
  std::vector<TensorView> views;
  ~HeldInputs() {
    if (!Py_IsInitialized()) {
      for (auto& h : held) h.array.release();  // at interpreter exit: leak, never crash
      return;
    }
    PyGILState_STATE state = PyGILState_Ensure();
    held.clear();
    PyGILState_Release(state);
  }
};

// A finished asynchronous request, handed to fastort's completion thread.
struct Completion {
  std::shared_ptr<GilRef> token;  // the caller's future
  Outcome outcome;
  std::vector<size_t> selected;
};

class PyEngine {
 public:
  explicit PyEngine(std::shared_ptr<Engine> core) : core_(std::move(core)) {
    for (const auto& io : model().inputs()) input_names_.push_back(py::str(io.name));
    for (const auto& io : model().outputs()) output_names_.push_back(py::str(io.name));
    // Output shapes are guessed from input shapes: only where every input and output is a tensor.
    for (const auto* ios : {&model().inputs(), &model().outputs()})
      for (const auto& io : *ios) guessable_ = guessable_ && io.kind == ValueKind::Tensor;
  }

  ~PyEngine() {
    if (!core_->has_queue()) return;
    py::gil_scoped_release release;  // workers may need the GIL to drop Python references
    core_->close(true);
  }

  const Session& model() const { return core_->model(); }
  const Engine& core() const { return *core_; }

  void start_batcher(const BatchConfig& config, bool route_runs) {
    core_->start_queue(config, route_runs);
    completions_ = std::make_shared<CompletionQueue<Completion>>();
  }

  py::list io_list(const std::vector<IOInfo>& ios) const {
    py::list out;
    for (const auto& io : ios) {
      py::tuple shape(io.shape.size());
      for (size_t d = 0; d < io.shape.size(); ++d) {
        if (io.shape[d] >= 0) shape[d] = py::int_(io.shape[d]);
        else if (!io.dim_names[d].empty()) shape[d] = py::str(io.dim_names[d]);
        else shape[d] = py::none();
      }
      py::object dt = io.kind == ValueKind::Tensor ? dtype_of(io.type) : py::object(py::none());
      py::object shape_obj = io.kind == ValueKind::Tensor ? py::object(shape) : py::object(py::none());
      out.append(py::make_tuple(io.name, io.type_string, dt, shape_obj));
    }
    return out;
  }

  py::dict run(py::handle inputs, py::handle outputs, py::handle out, double timeout_s, int priority) const {
    if (out.is_none() && core_->routes_runs()) return run_routed(inputs, outputs, timeout_s, priority);
    const size_t n = model().inputs().size();
    std::vector<Held> held(n);
    std::vector<TensorView> views(n);
    parse(inputs, held, views);
    core_->check_limits(views);
    std::vector<size_t> selected = select_outputs(model(), outputs);
    std::vector<py::object> out_arrays(selected.size());
    std::vector<TensorView> out_views = parse_out(model(), out, selected, out_arrays);
    return run_direct(views, selected, out_views, out_arrays);
  }

  // Runs unbatched and returns every tensor output as a Tensor left where
  // onnxruntime put it: in device memory with `to_device` (CUDA engines), else
  // in host memory. Device inputs are read in place.
  py::dict run_tensors(py::handle inputs, py::handle outputs, bool to_device) const {
    const size_t n = model().inputs().size();
    std::vector<Held> held(n);
    std::vector<TensorView> views(n);
    parse(inputs, held, views);
    std::vector<size_t> selected = select_outputs(model(), outputs);
    std::vector<Ort::Value> results;
    {
      py::gil_scoped_release release;
      results = to_device ? core_->run_to_device(views, selected) : core_->run(views, selected);
    }
    py::dict result;
    for (size_t k = 0; k < selected.size(); ++k) result[output_names_[selected[k]]] = owned_to_tensor(std::move(results[k]));
    return result;
  }

  // Queues a request; `token` (a future) comes back from pop_completions().
  uint64_t submit(py::handle inputs, py::handle outputs, py::object token, double timeout_s, int priority) {
    require_queue();
    auto held = std::make_shared<HeldInputs>();
    std::vector<size_t> selected = prepare(inputs, outputs, *held);
    auto tok = std::make_shared<GilRef>(std::move(token));
    Request request = make_request(held, timeout_s, priority);
    request.done = [queue = completions_, tok, selected](Outcome&& outcome) {
      queue->push(Completion{tok, std::move(outcome), selected});
    };
    return core_->submit(std::move(request));
  }

  bool cancel(uint64_t id) { return core_->cancel(id); }

  // [(token, result dict or None, exception or None)], or None once closed and drained.
  py::object pop_completions(double timeout_s) {
    require_queue();
    bool closed = false;
    std::vector<Completion> done;
    {
      py::gil_scoped_release release;
      done = completions_->pop(std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)), closed);
    }
    if (closed) return py::none();
    py::list out;
    for (auto& c : done) {
      py::object result = py::none(), error = py::none();
      if (c.outcome.error) {
        error = exception_object(c.outcome.error);
      } else {
        try {
          result = outcome_dict(c.outcome, c.selected);
        } catch (py::error_already_set& e) {
          error = e.value();
        } catch (...) {
          error = exception_object(std::current_exception());
        }
      }
      out.append(py::make_tuple(c.token->get(), result, error, c.outcome.queue_us, c.outcome.run_us));
    }
    return std::move(out);
  }

  void close(bool drain) {
    if (!core_->has_queue()) return;
    {
      py::gil_scoped_release release;
      core_->close(drain);
    }
    completions_->close();
  }

  py::dict stats() const {
    py::dict d;
    const SessionPool::DirectStats ds = core_->pool().direct_stats();
    py::dict direct;
    direct["requests"] = ds.requests;
    direct["failed"] = ds.failed;
    direct["compute_us_total"] = ds.run_us_total;
    direct["latency_mean_us"] = ds.requests ? ds.run_us_total / static_cast<double>(ds.requests) : 0.0;
    d["direct"] = direct;
    if (!core_->has_queue()) {  // a plain engine: its runs are all direct
      d["requests"] = ds.requests;
      d["failed"] = ds.failed;
      d["latency_mean_us"] = direct["latency_mean_us"];
      d["compute_us_total"] = ds.run_us_total;
      return d;
    }
    BatcherStats s = core_->stats();
    py::dict hist;
    for (size_t n = 0; n < s.batch_rows_histogram.size(); ++n)
      if (s.batch_rows_histogram[n]) hist[py::int_(n)] = s.batch_rows_histogram[n];
    d["requests"] = s.requests;
    d["rows"] = s.rows;
    d["batches"] = s.batches;
    d["failed"] = s.failed;
    d["timed_out"] = s.timed_out;
    d["cancelled"] = s.cancelled;
    d["rejected"] = s.rejected;
    d["batch_size_histogram"] = hist;
    d["mean_batch_size"] = s.batches ? static_cast<double>(s.rows) / static_cast<double>(s.batches) : 0.0;
    d["queue_requests"] = s.queue_requests;
    d["queue_rows"] = s.queue_rows;
    d["in_flight_batches"] = s.in_flight_batches;
    d["latency_p50_us"] = s.latency_p50_us;
    d["latency_p90_us"] = s.latency_p90_us;
    d["latency_p99_us"] = s.latency_p99_us;
    d["elapsed_s"] = s.elapsed_s;
    d["rows_per_s"] = s.elapsed_s > 0 ? static_cast<double>(s.rows) / s.elapsed_s : 0.0;
    d["requests_per_s"] = s.elapsed_s > 0 ? static_cast<double>(s.requests) / s.elapsed_s : 0.0;
    // Cumulative, as Triton's nv_inference_queue_duration_us / compute_infer_duration_us.
    d["queue_us_total"] = s.queue_us_total;
    d["compute_us_total"] = s.run_us_total;
    py::dict policy, per_row, reasons;
    for (size_t b = 0; b < CostModel::kBuckets; ++b)
      if (s.costs.samples[b]) per_row[py::int_(bucket_low(b))] = s.costs.us_per_row[b];
    for (size_t k = 1; k < kDispatchKinds; ++k)
      if (s.dispatch[k]) reasons[to_string(static_cast<Dispatch>(k))] = s.dispatch[k];
    policy["adaptive"] = s.adaptive;
    policy["batch_cap"] = s.batch_cap;
    policy["us_per_row_by_batch_size"] = per_row;
    policy["arrival_gap_us"] = s.costs.arrival_gap_us;
    policy["dispatch_reasons"] = reasons;
    if (s.learns_route) {
      // What the route learner measured: each mode's latest epoch, the mode
      // waiting callers get now, and how often it probed and switched.
      py::dict route, epochs;
      for (RouteMode m : {RouteMode::Queue, RouteMode::Direct}) {
        const RouteEpoch& e = s.route.last[static_cast<size_t>(m)];
        if (!e.valid()) continue;
        py::dict one;
        one["requests_per_s"] = e.per_s;
        one["latency_mean_us"] = e.mean_us;
        one["requests"] = e.requests;
        epochs[to_string(m)] = one;
      }
      route["mode"] = to_string(s.route.mode);
      route["chosen"] = to_string(s.route.chosen);
      route["last_epoch"] = epochs;
      route["epochs"] = s.route.epochs;
      route["probes"] = s.route.probes;
      route["switches"] = s.route.switches;
      policy["route"] = route;
    } else {
      policy["route"] = py::none();
    }
    d["policy"] = policy;
    return d;
  }

  void reset_stats() {
    core_->pool().reset_direct_stats();
    core_->reset_stats();
  }

  py::object bind_call(py::handle outputs, bool copy) const {
    return make_bound_call(core_, select_outputs(model(), outputs), copy);
  }

 private:
  void parse(py::handle inputs, std::vector<Held>& held, std::vector<TensorView>& views) const {
    parse_inputs(model(), input_names_, core_->pool().limits().max_bytes, inputs, held, views);
  }

  void require_queue() const {
    if (!core_->has_queue()) throw Error("this engine has no request queue (internal: start_batcher was not called)");
  }

  std::vector<size_t> prepare(py::handle inputs, py::handle outputs, HeldInputs& held) const {
    const size_t n = model().inputs().size();
    held.held.resize(n);
    held.views.resize(n);
    parse(inputs, held.held, held.views);
    return select_outputs(model(), outputs);
  }

  static Request make_request(const std::shared_ptr<HeldInputs>& held, double timeout_s, int priority) {
    Request request;
    request.inputs = held->views;
    request.deadline = deadline_after(timeout_s);
    request.priority = priority;
    request.keepalive = held;
    return request;
  }

  py::dict outcome_dict(Outcome& outcome, const std::vector<size_t>& selected) const {
    py::dict result;
    for (size_t idx : selected) result[output_names_[idx]] = slice_to_python(outcome.outputs.at(idx));
    return result;
  }

  // Straight to a replica. Small outputs whose shapes the core can guess are
  // allocated by numpy and written in place (see shape_guess.h). With
  // `claim`, on the replica an idle queue lent, given back as soon as
  // onnxruntime is done and before the GIL is taken again: requests queued
  // meanwhile must not wait for this thread's turn at the GIL.
  py::dict run_direct(const std::vector<TensorView>& views, const std::vector<size_t>& selected,
                      const std::vector<TensorView>& out_views, std::vector<py::object>& out_arrays,
                      Engine::InlineClaim* claim = nullptr) const {
    const size_t replica = claim ? claim->replica() : SessionPool::kLeastBusy;
    if (guessable_ && out_views.empty() && Engine::on_host(views)) {
      py::dict result;
      if (run_into_guess(views, selected, result, claim)) return result;
    }
    std::vector<Ort::Value> results;
    {
      py::gil_scoped_release release;
      results = core_->run(views, selected, out_views, replica);
      if (claim) claim->end();
    }
    if (guessable_ && out_views.empty()) core_->shapes().remember(views, selected, results, &numpy_allocatable);
    py::dict result;
    for (size_t k = 0; k < selected.size(); ++k)
      result[output_names_[selected[k]]] = out_arrays[k] ? out_arrays[k] : owned_to_python(std::move(results[k]));
    return result;
  }

  bool run_into_guess(const std::vector<TensorView>& views, const std::vector<size_t>& selected,
                      py::dict& result, Engine::InlineClaim* claim) const {
    // The per-call path of Engine.run: the arrays go into `result` up front
    // (a wrong guess returns false and the caller builds a new result), and
    // numpy gets the guessed dims as they are: no copies of the shapes.
    std::vector<TensorView> out_views;
    if (!core_->shapes().lookup(views, selected, out_views)) return false;
    const auto& outs = model().outputs();
    for (size_t k = 0; k < selected.size(); ++k) {
      TensorView& v = out_views[k];
      v.type = outs[selected[k]].type;
      py::array a = new_array(dtype_of(v.type), v.shape.size(), v.shape.data());
      v.data = a.mutable_data();
      result[output_names_[selected[k]]] = std::move(a);
    }
    bool ok;
    {
      py::gil_scoped_release release;
      ok = core_->run_guessed(views, selected, out_views, claim ? claim->replica() : SessionPool::kLeastBusy);
      if (ok && claim) claim->end();
    }
    return ok;
  }

  // run() of an engine whose runs go through the queue: host requests are
  // queued and waited for, GIL released (Ctrl-C cancels a queued request);
  // the core routes device inputs straight to a replica. When the queue is
  // idle, the request runs here on the replica it lends (the direct path, with
  // no request record, callback or output slicing: what a lone client pays).
  py::dict run_routed(py::handle inputs, py::handle outputs, double timeout_s, int priority) const {
    auto held = std::make_shared<HeldInputs>();
    std::vector<size_t> selected = prepare(inputs, outputs, *held);
    if (core_->route(false, held->views) == Engine::Route::Direct) {
      std::vector<py::object> no_arrays(selected.size());
      return run_direct(held->views, selected, {}, no_arrays);
    }
    if (Engine::InlineClaim claim = core_->claim_inline(held->views, priority, deadline_after(timeout_s)); claim.valid()) {
      std::vector<py::object> no_arrays(selected.size());
      return run_direct(held->views, selected, {}, no_arrays, &claim);
    }
    auto waiter = std::make_shared<Waiter>();
    Request request = make_request(held, timeout_s, priority);
    request.done = Waiter::callback(waiter);
    uint64_t id;
    {
      py::gil_scoped_release release;  // an idle adaptive queue runs it here and now
      id = core_->submit(std::move(request), /*run_here=*/true);
    }
    for (bool done = id == 0; !done;) {
      {
        py::gil_scoped_release release;
        done = waiter->wait_for(std::chrono::milliseconds(50));
      }
      if (!done && PyErr_CheckSignals() != 0) {
        core_->cancel(id);  // a request already running completes unseen
        throw py::error_already_set();
      }
    }
    if (waiter->outcome().error) std::rethrow_exception(waiter->outcome().error);
    return outcome_dict(waiter->outcome(), selected);
  }

  std::shared_ptr<Engine> core_;
  std::shared_ptr<CompletionQueue<Completion>> completions_;
  std::vector<py::str> input_names_;
  std::vector<py::str> output_names_;
  bool guessable_ = true;
};

// Opens an engine of a model given as a path (str) or bytes; `initializers`
// [(name, array)] are held once and shared by every replica.
std::shared_ptr<PyEngine> open_engine(const py::object& model, const EngineConfig& config,
                                      const py::list& initializers) {
  auto weights = std::make_shared<HeldInputs>();
  std::vector<std::pair<std::string, TensorView>> shared;
  weights->held.resize(initializers.size());
  for (size_t i = 0; i < initializers.size(); ++i) {
    auto item = initializers[i].cast<py::tuple>();
    const auto name = item[0].cast<std::string>();
    shared.emplace_back(name, view_of_array(item[1], "initializer", name, weights->held[i]));
  }
  ModelSource source;
  py::object keep = model;  // bytes stay referenced (and immutable) while loading
  if (py::isinstance<py::bytes>(model)) {
    char* buffer = nullptr;
    Py_ssize_t size = 0;
    if (PyBytes_AsStringAndSize(model.ptr(), &buffer, &size) != 0) throw py::error_already_set();
    source.data = buffer;
    source.size = static_cast<size_t>(size);
    if (size == 0) throw ModelLoadError("cannot load model bytes: the model is empty (0 bytes)");
  } else {
    source.path = model.cast<std::string>();
  }
  std::shared_ptr<Engine> core;
  {
    py::gil_scoped_release release;
    core = Engine::open(source, config, shared, weights);
  }
  return std::make_shared<PyEngine>(std::move(core));
}

}  // namespace

void bind_engine(py::module_& m) {
  py::class_<PyEngine, std::shared_ptr<PyEngine>>(m, "Engine")
      .def_static("open", &open_engine, py::arg("model"), py::arg("config"), py::arg("initializers") = py::list())
      .def_property_readonly("inputs", [](const PyEngine& e) { return e.io_list(e.model().inputs()); })
      .def_property_readonly("outputs", [](const PyEngine& e) { return e.io_list(e.model().outputs()); })
      .def_property_readonly("replicas", [](const PyEngine& e) { return e.core().replicas(); })
      .def_property_readonly("has_batcher", [](const PyEngine& e) { return e.core().has_queue(); })
      .def_property_readonly("batching", [](const PyEngine& e) { return e.core().batching(); })
      .def_property_readonly("unbatchable_reason", [](const PyEngine& e) { return e.core().unbatchable_reason(); })
      .def_property_readonly("device", [](const PyEngine& e) { return e.core().device().str(); })
      .def_property_readonly("replica_providers", [](const PyEngine& e) { return e.core().replica_providers(); })
      .def("start_batcher", &PyEngine::start_batcher, py::arg("config"), py::arg("route_runs"))
      .def("run", &PyEngine::run, py::arg("inputs"), py::arg("outputs") = py::none(), py::arg("out") = py::none(),
           py::arg("timeout") = 0.0, py::arg("priority") = 0, "Run the model; returns a dict of output name -> value.")
      .def("run_tensors", &PyEngine::run_tensors, py::arg("inputs"), py::arg("outputs") = py::none(),
           py::arg("to_device") = false)
      .def("submit", &PyEngine::submit, py::arg("inputs"), py::arg("outputs"), py::arg("token"),
           py::arg("timeout") = 0.0, py::arg("priority") = 0)
      .def("cancel", &PyEngine::cancel, py::arg("id"))
      .def("pop_completions", &PyEngine::pop_completions, py::arg("timeout"))
      .def("close", &PyEngine::close, py::arg("drain") = true)
      .def("stats", &PyEngine::stats)
      .def("reset_stats", &PyEngine::reset_stats)
      .def("bind", &PyEngine::bind_call, py::arg("outputs") = py::none(), py::arg("copy") = true);

  // fastort.Engine.run as a native method of the Python class (engine.py
  // installs it): a call with numpy results on an open engine goes straight to
  // PyEngine::run, without the Python frame of the method; everything else
  // (another output_format, a closed engine, an engine whose outputs default
  // to device tensors) goes to `python_run`, the method written in Python.
  m.def(
      "engine_run_method",
      [](py::object python_run, const std::string& doc) {
        // Interned once and kept for the life of the process.
        static PyObject* const core_name = PyUnicode_InternFromString("_core");
        static PyObject* const format_name = PyUnicode_InternFromString("_output_format");
        py::cpp_function run(
            [python_run](py::handle self, py::handle inputs, py::handle outputs, py::handle out, py::handle timeout,
                         int priority, py::handle output_format) -> py::object {
              auto fallback = [&] {
                return python_run(self, inputs, py::arg("outputs") = outputs, py::arg("out") = out,
                                  py::arg("timeout") = timeout, py::arg("priority") = priority,
                                  py::arg("output_format") = output_format);
              };
              const bool numpy = output_format.is_none() ||
                                 (PyUnicode_Check(output_format.ptr()) &&
                                  PyUnicode_CompareWithASCIIString(output_format.ptr(), "numpy") == 0);
              if (!numpy) return fallback();
              auto core = py::reinterpret_steal<py::object>(PyObject_GetAttr(self.ptr(), core_name));
              if (!core) throw py::error_already_set();
              if (core.is_none()) return fallback();  // closed: the method says so
              if (output_format.is_none()) {
                auto fmt = py::reinterpret_steal<py::object>(PyObject_GetAttr(self.ptr(), format_name));
                if (!fmt) throw py::error_already_set();
                if (!fmt.is_none()) return fallback();
              }
              if (!timeout.is_none() && !PyFloat_Check(timeout.ptr()) && !PyLong_Check(timeout.ptr()))
                return fallback();  // the method's own error for a timeout that is not a number
              const double t = timeout.is_none() ? 0.0 : timeout.cast<double>();
              return py::cast<const PyEngine&>(core).run(inputs, outputs, out, t, priority);
            },
            py::name("run"), py::arg("self"), py::arg("inputs"), py::kw_only(), py::arg("outputs") = py::none(),
            py::arg("out") = py::none(), py::arg("timeout") = py::none(), py::arg("priority") = 0,
            py::arg("output_format") = py::none(), py::doc(doc.c_str()));
        return py::reinterpret_steal<py::object>(PyInstanceMethod_New(run.ptr()));
      },
      py::arg("python_run"), py::arg("doc"));
}

}  // namespace bind
}  // namespace fastort
