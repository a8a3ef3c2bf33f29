// The Python module fastort._core: one bind_* function per concern (bind.h),
// plus the runtime's few module-level functions.
#include "bind.h"

#include "fastort/device.h"
#include "fastort/runtime.h"
#include "fastort/runtime_log.h"

namespace {

void bind_runtime(py::module_& m) {
  using namespace fastort;
  m.def("load_runtime", [](const std::string& path) { Runtime::load(path); }, py::arg("path"),
        "Load libonnxruntime from `path` (once per process).");
  m.def("runtime_loaded", &Runtime::is_loaded);
  m.def(
      "drain_runtime_log",
      []() {
        uint64_t dropped = 0;
        std::vector<RuntimeLogLine> lines = drain_runtime_log(dropped);
        py::list out;
        for (auto& l : lines) out.append(py::make_tuple(l.severity, l.category, l.logid, l.location, l.message));
        return py::make_tuple(out, dropped);
      },
      "onnxruntime's queued log lines [(severity, category, logid, code location, message)] and how many were "
      "dropped (the queue is bounded)");
  m.def("shared_weight_file", &shared_weight_file, py::arg("initializer"));
  m.def("runtime_info", []() {
    RuntimeInfo info = Runtime::get().info();
    GlobalThreadOptions threads = Runtime::get().global_threads();
    py::dict d;
    d["version"] = info.version;
    d["api_version"] = info.api_version_compiled;
    d["library_path"] = info.library_path;
    d["providers"] = info.providers;
    d["global_intra_op_threads"] = threads.intra_op_threads;
    d["global_inter_op_threads"] = threads.inter_op_threads;
    d["cuda_runtime"] = cuda::unavailable_reason().empty() ? std::string("loaded") : cuda::unavailable_reason();
    return d;
  });
  m.def(
      "configure_global_threads",
      [](int intra, int inter, bool spinning) {
        Runtime::get().configure_global_threads(GlobalThreadOptions{intra, inter, spinning});
      },
      py::arg("intra_op_threads"), py::arg("inter_op_threads"), py::arg("allow_spinning"));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastort's native core (C++ on the onnxruntime C++ API)";
  fastort::bind::bind_errors(m);
  bind_runtime(m);
  fastort::bind::bind_arrays(m);
  fastort::bind::bind_tensor(m);
  fastort::bind::bind_config(m);
  fastort::bind::bind_engine(m);
  fastort::bind::bind_devices(m);
  fastort::bind::bind_bound(m);
}
