// The typed settings that cross the boundary (EngineConfig, BatchConfig) and
// the batching policy's question the Python package asks (batchability).
#include "bind.h"

#include "fastort/batch_policy.h"
#include "fastort/engine.h"

namespace fastort {
namespace bind {
namespace {

using Entries = std::vector<std::pair<std::string, std::string>>;

// An IOInfo from Python's (name, type string, shape or None), shape dims being
// ints (fixed), strs (named) or None.
IOInfo io_of(const py::handle& item) {
  auto t = item.cast<py::tuple>();
  if (t.size() != 3) throw py::value_error("an input/output is (name, type, shape or None)");
  IOInfo io;
  io.name = t[0].cast<std::string>();
  io.type_string = t[1].cast<std::string>();
  io.kind = io.type_string.rfind("tensor(", 0) == 0 ? ValueKind::Tensor : ValueKind::Other;
  if (!t[2].is_none()) {
    io.has_shape = true;
    for (py::handle d : t[2]) {
      const bool fixed = py::isinstance<py::int_>(d) && d.cast<int64_t>() >= 0;
      io.shape.push_back(fixed ? d.cast<int64_t>() : -1);
      io.dim_names.push_back(py::isinstance<py::str>(d) ? d.cast<std::string>() : std::string());
    }
  }
  return io;
}

std::vector<IOInfo> ios_of(const py::iterable& items) {
  std::vector<IOInfo> out;
  for (py::handle item : items) out.push_back(io_of(item));
  return out;
}

}  // namespace

void bind_config(py::module_& m) {
  using S = EngineConfig;
  py::class_<EngineConfig>(m, "EngineConfig", "What an engine is opened with (built from fastort.EngineOptions)")
      .def(py::init<>())
      .def_property("providers", [](const S& c) { return c.session.providers; },
                    [](S& c, std::vector<std::string> v) { c.session.providers = std::move(v); })
      .def_property("provider_options", [](const S& c) { return c.session.provider_options; },
                    [](S& c, std::vector<Entries> v) { c.session.provider_options = std::move(v); })
      .def_property("intra_op_threads", [](const S& c) { return c.session.intra_op_threads; },
                    [](S& c, int v) { c.session.intra_op_threads = v; })
      .def_property("inter_op_threads", [](const S& c) { return c.session.inter_op_threads; },
                    [](S& c, int v) { c.session.inter_op_threads = v; })
      .def_property("use_global_thread_pools", [](const S& c) { return c.session.use_global_thread_pools; },
                    [](S& c, bool v) { c.session.use_global_thread_pools = v; })
      .def_property("graph_optimization", [](const S& c) { return static_cast<int>(c.session.graph_optimization); },
                    [](S& c, int v) { c.session.graph_optimization = static_cast<GraphOptimizationLevel>(v); })
      .def_property("execution_mode", [](const S& c) { return static_cast<int>(c.session.execution_mode); },
                    [](S& c, int v) { c.session.execution_mode = static_cast<ExecutionMode>(v); })
      .def_property("log_level", [](const S& c) { return c.session.log_level; },
                    [](S& c, int v) { c.session.log_level = v; })
      .def_property("session_config", [](const S& c) { return c.session.config; },
                    [](S& c, Entries v) { c.session.config = std::move(v); })
      .def_property("pinned_staging_min_bytes", [](const S& c) { return c.session.pinned_staging_min_bytes; },
                    [](S& c, size_t v) { c.session.pinned_staging_min_bytes = v; })
      .def_property("ep_policy", [](const S& c) { return c.session.ep_policy; },
                    [](S& c, std::string v) { c.session.ep_policy = std::move(v); })
      .def_readwrite("replicas", &S::replicas)
      .def_readwrite("share_weights", &S::share_weights)
      .def_property("max_request_bytes", [](const S& c) { return c.limits.max_bytes; },
                    [](S& c, size_t v) { c.limits.max_bytes = v; })
      .def_property("max_request_rows", [](const S& c) { return c.limits.max_rows; },
                    [](S& c, size_t v) { c.limits.max_rows = v; })
      .def_property("row_axis", [](const S& c) { return c.limits.row_axis; },
                    [](S& c, size_t v) { c.limits.row_axis = v; });

  using B = BatchConfig;
  py::class_<BatchConfig>(m, "BatchConfig", "The request queue's settings (built from fastort.BatchConfig)")
      .def(py::init<>())
      .def_readwrite("max_batch_size", &B::max_batch_size)
      .def_property("max_delay_us", [](const B& c) { return static_cast<int64_t>(c.max_delay.count()); },
                    [](B& c, int64_t v) { c.max_delay = std::chrono::microseconds(v); })
      .def_readwrite("max_queue", &B::max_queue_requests)
      .def_readwrite("max_queue_rows", &B::max_queue_rows)
      .def_readwrite("batch_axis", &B::batch_axis)
      .def_readwrite("priority_levels", &B::priority_levels)
      .def_readwrite("adaptive", &B::adaptive)
      .def_property(
          "padding",
          [](const B& c) {
            std::vector<std::tuple<size_t, size_t, double>> out;
            for (const auto& p : c.padding) out.emplace_back(p.input, p.dim, p.value);
            return out;
          },
          [](B& c, const std::vector<std::tuple<size_t, size_t, double>>& v) {
            c.padding.clear();
            for (const auto& [input, dim, value] : v) c.padding.push_back(PadSpec{input, dim, value});
          });

  m.def(
      "batchability",
      [](const py::iterable& inputs, const py::iterable& outputs, size_t batch_axis) {
        Batchability b = batchability(ios_of(inputs), ios_of(outputs), batch_axis);
        return py::make_tuple(b.ok, b.reason);
      },
      py::arg("inputs"), py::arg("outputs"), py::arg("batch_axis") = 0,
      "Whether the core batches a model with these inputs and outputs along batch_axis: (ok, reason why not).\n"
      "Each input/output is (name, type string, shape or None); a dim is an int (fixed), a str or None (dynamic).");
}

}  // namespace bind
}  // namespace fastort
