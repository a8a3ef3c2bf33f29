// The Python module fastort._core: the only file that knows about Python.
// numpy arrays become TensorViews over their own memory; onnxruntime's output
// values become numpy arrays that own them. The GIL is released while
// onnxruntime loads or runs a model.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "errors.h"
#include "runtime.h"
#include "session.h"
#include "tensor.h"

namespace py = pybind11;

namespace fastort {
namespace {

// ---------------------------------------------------------------- errors ----

// The Python classes of fastort.errors, handed over once at import. Plain
// handles holding a reference each: they must outlive the interpreter's teardown.
struct ErrorTypes {
  py::handle base, runtime_load, model_load, invalid_input, run;
};
ErrorTypes g_errors;

void set_error_types(py::object base, py::object runtime_load, py::object model_load, py::object invalid_input,
                     py::object run) {
  g_errors = {base.release(), runtime_load.release(), model_load.release(), invalid_input.release(),
              run.release()};
}

void raise(py::handle type, PyObject* fallback, const char* what) {
  PyErr_SetString(type ? type.ptr() : fallback, what);
}

void translate_errors(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const InvalidInputError& e) {
    raise(g_errors.invalid_input, PyExc_ValueError, e.what());
  } catch (const ModelLoadError& e) {
    raise(g_errors.model_load, PyExc_ValueError, e.what());
  } catch (const RunError& e) {
    raise(g_errors.run, PyExc_RuntimeError, e.what());
  } catch (const RuntimeLoadError& e) {
    raise(g_errors.runtime_load, PyExc_ImportError, e.what());
  } catch (const Error& e) {
    raise(g_errors.base, PyExc_RuntimeError, e.what());
  } catch (const Ort::Exception& e) {
    raise(g_errors.run, PyExc_RuntimeError, e.what());
  }
}

// ---------------------------------------------------------------- dtypes ----

constexpr size_t kNumTypes = 32;

// numpy dtype <-> onnxruntime element type. ml_dtypes (bfloat16, float8) is
// imported the first time such a dtype is met or needed.
class DtypeTable {
 public:
  ElementType type_of(const py::dtype& dt) {
    const int num = dt.num();
    if (num >= 256) {  // a user-defined dtype: ml_dtypes registers its types this way
      load_ml_dtypes(false);
      auto it = user_types_.find(num);
      return it == user_types_.end() ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED : it->second;
    }
    const auto size = dt.itemsize();
    switch (dt.kind()) {
      case 'b': return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
      case 'i':
        return size == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8
             : size == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16
             : size == 4 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32
             : size == 8 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64
                         : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
      case 'u':
        return size == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8
             : size == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16
             : size == 4 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32
             : size == 8 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64
                         : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
      case 'f':
        return size == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16
             : size == 4 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
             : size == 8 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE
                         : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
      case 'c':
        return size == 8 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64
             : size == 16 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128
                          : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
      case 'U':
      case 'S':
      case 'O': return ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
      default: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    }
  }

  // The numpy dtype for an element type; None where numpy (and ml_dtypes) has none.
  py::object dtype_of(ElementType type) {
    const size_t t = static_cast<size_t>(type);
    if (t >= kNumTypes) return py::none();
    if (!dtypes_[t]) {
      if (is_ml_type(type)) {
        load_ml_dtypes(true);
      } else if (const char* name = numpy_name(type)) {
        dtypes_[t] = py::dtype(name).release().ptr();
      }
    }
    return dtypes_[t] ? py::reinterpret_borrow<py::object>(dtypes_[t]) : py::object(py::none());
  }

 private:
  static bool is_ml_type(ElementType type) {
    return type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 || type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN ||
           type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FNUZ || type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2 ||
           type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2FNUZ;
  }

  static const char* numpy_name(ElementType type) {
    switch (type) {
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "O";
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT4:
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT4:
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED: return nullptr;
      default: return is_ml_type(type) ? nullptr : element_type_name(type);
    }
  }

  // Registers ml_dtypes' types. With `required`, a missing ml_dtypes is an error.
  void load_ml_dtypes(bool required) {
    if (ml_tried_ && (ml_loaded_ || !required)) return;
    ml_tried_ = true;
    py::module_ ml;
    try {
      ml = py::module_::import("ml_dtypes");
    } catch (py::error_already_set&) {
      if (!required) return;
      throw InvalidInputError("bfloat16 and float8 tensors need the ml_dtypes package: pip install ml_dtypes");
    }
    const std::array<std::pair<const char*, ElementType>, 5> names{{
        {"bfloat16", ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16},
        {"float8_e4m3fn", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN},
        {"float8_e4m3fnuz", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FNUZ},
        {"float8_e5m2", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2},
        {"float8_e5m2fnuz", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2FNUZ},
    }};
    for (const auto& [name, type] : names) {
      if (!py::hasattr(ml, name)) continue;
      py::dtype dt = py::dtype::from_args(ml.attr(name));
      user_types_[dt.num()] = type;
      dtypes_[static_cast<size_t>(type)] = dt.release().ptr();
    }
    ml_loaded_ = true;
  }

  std::array<PyObject*, kNumTypes> dtypes_{};  // strong references, never released
  std::unordered_map<int, ElementType> user_types_;
  bool ml_tried_ = false;
  bool ml_loaded_ = false;
};

DtypeTable& dtypes() {
  static DtypeTable* table = std::make_unique<DtypeTable>().release();  // lives as long as the interpreter
  return *table;
}

std::string type_name(py::handle obj) { return py::str(py::type::of(obj).attr("__name__")); }

// ---------------------------------------------------------------- inputs ----

// Keeps what a TensorView points into alive for the length of a run.
struct Held {
  py::object array;
  std::vector<std::string> utf8;  // string tensors: the encoded elements
  std::vector<std::string_view> views;
};

// Turns a numpy array into a view over its memory. Non-contiguous or byte-swapped
// arrays are converted once (documented); everything else is used in place.
TensorView view_of_array(py::handle obj, const std::string& what, Held& held) {
  if (!py::isinstance<py::array>(obj)) {
    if (py::isinstance(obj, py::module_::import("numpy").attr("generic"))) {
      obj = held.array = py::array::ensure(obj);
    } else {
      throw InvalidInputError(what + ": expected a numpy.ndarray, got " + type_name(obj) +
                              " (wrap it with numpy.asarray(..., dtype=...))");
    }
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  py::dtype dt = arr.dtype();
  TensorView view;
  view.type = dtypes().type_of(dt);
  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED)
    throw InvalidInputError(what + ": numpy dtype " + std::string(py::str(dt)) + " is not supported");

  const char order = dt.byteorder();
  const bool swapped = order == '>' && dt.itemsize() > 1;  // this is little-endian-only code
  if (view.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING &&
      (swapped || !(arr.flags() & py::array::c_style))) {
    arr = py::module_::import("numpy").attr("ascontiguousarray")(arr, dt.attr("newbyteorder")("="));
  }
  held.array = arr;
  const auto ndim = static_cast<size_t>(arr.ndim());
  view.shape.resize(ndim);
  for (size_t d = 0; d < ndim; ++d) view.shape[d] = static_cast<int64_t>(arr.shape(static_cast<py::ssize_t>(d)));

  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
    py::list items = arr.attr("ravel")().attr("tolist")();
    held.utf8.reserve(items.size());
    size_t i = 0;
    for (py::handle item : items) {
      if (PyUnicode_Check(item.ptr())) {
        Py_ssize_t len = 0;
        const char* s = PyUnicode_AsUTF8AndSize(item.ptr(), &len);
        if (s == nullptr) throw py::error_already_set();
        held.utf8.emplace_back(s, static_cast<size_t>(len));
      } else if (PyBytes_Check(item.ptr())) {
        held.utf8.emplace_back(PyBytes_AS_STRING(item.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(item.ptr())));
      } else {
        throw InvalidInputError(what + ": string tensors take str or bytes elements, element " + std::to_string(i) +
                                " is " + type_name(item));
      }
      ++i;
    }
    held.views.assign(held.utf8.begin(), held.utf8.end());
    view.strings = held.views.data();
  } else {
    view.data = const_cast<void*>(arr.data());  // onnxruntime only reads inputs
  }
  return view;
}

// --------------------------------------------------------------- outputs ----

py::object to_python(Ort::Value value);

py::object string_array(const Ort::Value& value, const std::vector<int64_t>& shape) {
  std::vector<std::string> items = string_contents(value);
  std::vector<py::ssize_t> dims(shape.begin(), shape.end());
  py::array result(py::dtype("O"), dims);
  auto** slots = static_cast<PyObject**>(result.mutable_data());
  for (size_t i = 0; i < items.size(); ++i) {
    PyObject* s = PyUnicode_DecodeUTF8(items[i].data(), static_cast<Py_ssize_t>(items[i].size()), "surrogateescape");
    if (s == nullptr) throw py::error_already_set();
    Py_XDECREF(slots[i]);
    slots[i] = s;
  }
  return std::move(result);
}

py::object tensor_to_numpy(Ort::Value value) {
  TensorView view = view_of(value);
  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) return string_array(value, view.shape);
  py::object dt = dtypes().dtype_of(view.type);
  if (dt.is_none())
    throw RunError(std::string("output element type ") + element_type_name(view.type) +
                   " has no numpy equivalent");
  const size_t item = element_size(view.type);
  std::vector<py::ssize_t> dims(view.shape.begin(), view.shape.end());
  std::vector<py::ssize_t> strides(dims.size());
  py::ssize_t stride = static_cast<py::ssize_t>(item);
  for (size_t d = dims.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= dims[d];
  }
  if (view.data == nullptr) return py::array(py::reinterpret_borrow<py::dtype>(dt), dims, strides);
  // The array owns the onnxruntime value: no copy, freed with the last view of it.
  auto owner = std::make_unique<Ort::Value>(std::move(value));
  py::capsule base(owner.get(), [](void* p) { std::unique_ptr<Ort::Value> owned(static_cast<Ort::Value*>(p)); });
  owner.release();
  return py::array(py::reinterpret_borrow<py::dtype>(dt), dims, strides, view.data, base);
}

py::object to_python(Ort::Value value) {
  if (!value.HasValue()) return py::none();
  if (value.IsTensor()) return tensor_to_numpy(std::move(value));
  const auto kind = value.GetTypeInfo().GetONNXType();
  std::vector<Ort::Value> parts = elements_of(value);
  if (kind == ONNX_TYPE_SEQUENCE) {
    py::list out(parts.size());
    for (size_t i = 0; i < parts.size(); ++i) out[i] = to_python(std::move(parts[i]));
    return std::move(out);
  }
  if (kind == ONNX_TYPE_MAP && parts.size() == 2) {
    py::list keys = to_python(std::move(parts[0])).attr("tolist")();
    py::list values = to_python(std::move(parts[1])).attr("tolist")();
    py::dict out;
    for (size_t i = 0; i < keys.size(); ++i) out[keys[i]] = values[i];
    return std::move(out);
  }
  throw RunError("an output is of a kind fastort cannot convert (not a tensor, sequence or map)");
}

// --------------------------------------------------------------- session ----

std::string names_of(const std::vector<IOInfo>& ios) {
  std::string s;
  for (const auto& io : ios) s += (s.empty() ? "" : ", ") + io.name;
  return s.empty() ? "none" : s;
}

class PySession {
 public:
  explicit PySession(std::shared_ptr<Session> core) : core_(std::move(core)) {
    for (const auto& io : core_->inputs()) input_names_.push_back(py::str(io.name));
    for (const auto& io : core_->outputs()) output_names_.push_back(py::str(io.name));
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
      py::object dt = io.kind == ValueKind::Tensor ? dtypes().dtype_of(io.type) : py::object(py::none());
      py::object shape_obj = io.kind == ValueKind::Tensor ? py::object(shape) : py::object(py::none());
      out.append(py::make_tuple(io.name, io.type_string, dt, shape_obj));
    }
    return out;
  }

  py::dict run(py::handle inputs, py::handle outputs, py::handle out) const {
    const auto& ins = core_->inputs();
    const size_t n = ins.size();
    std::vector<Held> held(n);
    std::vector<TensorView> views(n);
    if (PyDict_Check(inputs.ptr())) {
      size_t found = 0;
      std::string missing;
      for (size_t i = 0; i < n; ++i) {
        PyObject* item = PyDict_GetItemWithError(inputs.ptr(), input_names_[i].ptr());
        if (item == nullptr) {
          if (PyErr_Occurred()) throw py::error_already_set();
          missing += (missing.empty() ? "'" : ", '") + ins[i].name + "'";
          continue;
        }
        ++found;
        views[i] = view_of_array(item, "input '" + ins[i].name + "'", held[i]);
      }
      if (!missing.empty() || found != static_cast<size_t>(PyDict_Size(inputs.ptr()))) {
        std::string unknown;
        for (auto kv : py::reinterpret_borrow<py::dict>(inputs)) {
          const std::string key = py::str(kv.first);
          if (!py::isinstance<py::str>(kv.first) || core_->input_index(key) < 0)
            unknown += (unknown.empty() ? "'" : ", '") + key + "'";
        }
        std::string msg;
        if (!missing.empty()) msg = "missing input " + missing;
        if (!unknown.empty()) msg += (msg.empty() ? "" : "; ") + std::string("unknown input ") + unknown;
        throw InvalidInputError(msg + " (model inputs: " + names_of(ins) + ")");
      }
    } else if (PyList_Check(inputs.ptr()) || PyTuple_Check(inputs.ptr()) ||
               (n == 1 && py::isinstance<py::array>(inputs))) {
      py::sequence seq = PyList_Check(inputs.ptr()) || PyTuple_Check(inputs.ptr())
                             ? py::reinterpret_borrow<py::sequence>(inputs)
                             : py::sequence(py::make_tuple(inputs));
      if (static_cast<size_t>(seq.size()) != n)
        throw InvalidInputError("the model takes " + std::to_string(n) + " inputs (" + names_of(ins) + "), got " +
                                std::to_string(seq.size()));
      for (size_t i = 0; i < n; ++i) views[i] = view_of_array(seq[i], "input '" + ins[i].name + "'", held[i]);
    } else {
      throw InvalidInputError("inputs must be a dict of name -> numpy array or a list/tuple in input order (" +
                              names_of(ins) + "), got " + type_name(inputs));
    }

    // Which outputs, and which of them go into caller buffers.
    const auto& outs = core_->outputs();
    std::vector<size_t> selected;
    if (!outputs.is_none()) {
      if (py::isinstance<py::str>(outputs)) throw InvalidInputError("outputs must be a list of output names, not a str");
      for (py::handle name : outputs) {
        const std::string s = py::str(name);
        const auto idx = core_->output_index(s);
        if (idx < 0 || !py::isinstance<py::str>(name))
          throw InvalidInputError("unknown output '" + s + "' (model outputs: " + names_of(outs) + ")");
        selected.push_back(static_cast<size_t>(idx));
      }
    } else {
      for (size_t k = 0; k < outs.size(); ++k) selected.push_back(k);
    }
    std::vector<TensorView> out_views;
    std::vector<py::object> out_arrays(selected.size());
    if (!out.is_none()) {
      if (!PyDict_Check(out.ptr())) throw InvalidInputError("out must be a dict of output name -> numpy array");
      out_views.resize(selected.size());
      for (auto kv : py::reinterpret_borrow<py::dict>(out)) {
        const std::string key = py::str(kv.first);
        const auto idx = core_->output_index(key);
        size_t k = 0;
        while (k < selected.size() && static_cast<std::ptrdiff_t>(selected[k]) != idx) ++k;
        if (idx < 0 || k == selected.size())
          throw InvalidInputError("out has a buffer for '" + key + "', which is not a requested output (" +
                                  names_of(outs) + ")");
        const std::string what = "output buffer for '" + key + "'";
        if (!py::isinstance<py::array>(kv.second))
          throw InvalidInputError(what + ": expected a numpy.ndarray, got " + type_name(kv.second));
        auto arr = py::reinterpret_borrow<py::array>(kv.second);
        if (!(arr.flags() & py::array::c_style) || !arr.writeable() ||
            (arr.dtype().byteorder() == '>' && arr.itemsize() > 1))
          throw InvalidInputError(what + " must be a writeable, C-contiguous array in native byte order");
        TensorView v;
        v.type = dtypes().type_of(arr.dtype());
        v.data = arr.mutable_data();
        for (py::ssize_t d = 0; d < arr.ndim(); ++d) v.shape.push_back(static_cast<int64_t>(arr.shape(d)));
        core_->check_output_buffer(static_cast<size_t>(idx), v);
        out_views[k] = std::move(v);
        out_arrays[k] = arr;
      }
    }

    std::vector<Ort::Value> results;
    {
      py::gil_scoped_release release;
      results = core_->run(views, selected, out_views);
    }
    py::dict result;
    for (size_t k = 0; k < selected.size(); ++k) {
      result[output_names_[selected[k]]] = out_arrays[k] ? out_arrays[k] : to_python(std::move(results[k]));
    }
    return result;
  }

  const Session& core() const { return *core_; }

 private:
  std::shared_ptr<Session> core_;
  std::vector<py::str> input_names_;
  std::vector<py::str> output_names_;
};

SessionOptions make_options(const std::vector<std::string>& providers, int intra, int inter, int graph_opt,
                            int exec_mode, int log_level,
                            const std::vector<std::pair<std::string, std::string>>& config) {
  SessionOptions o;
  o.providers = providers;
  o.intra_op_threads = intra;
  o.inter_op_threads = inter;
  o.graph_optimization = static_cast<GraphOptimizationLevel>(graph_opt);
  o.execution_mode = static_cast<ExecutionMode>(exec_mode);
  o.log_level = log_level;
  o.config = config;
  return o;
}

}  // namespace
}  // namespace fastort

PYBIND11_MODULE(_core, m) {
  using namespace fastort;
  m.doc() = "fastort's native core (C++ on the onnxruntime C++ API)";
  py::register_exception_translator(&translate_errors);

  m.def("_set_error_types", &set_error_types);
  m.def("load_runtime", [](const std::string& path) { Runtime::load(path); }, py::arg("path"),
        "Load libonnxruntime from `path` (once per process).");
  m.def("runtime_loaded", &Runtime::is_loaded);
  m.def("runtime_info", []() {
    RuntimeInfo info = Runtime::get().info();
    py::dict d;
    d["version"] = info.version;
    d["api_version"] = info.api_version_compiled;
    d["library_path"] = info.library_path;
    d["providers"] = info.providers;
    return d;
  });

  py::class_<PySession, std::shared_ptr<PySession>>(m, "Session")
      .def_static(
          "open_file",
          [](const std::string& path, const std::vector<std::string>& providers, int intra, int inter, int graph_opt,
             int exec_mode, int log_level, const std::vector<std::pair<std::string, std::string>>& config) {
            SessionOptions o = make_options(providers, intra, inter, graph_opt, exec_mode, log_level, config);
            std::shared_ptr<Session> s;
            {
              py::gil_scoped_release release;
              s = Session::open_file(path, o);
            }
            return std::make_shared<PySession>(std::move(s));
          })
      .def_static(
          "open_bytes",
          [](const py::bytes& data, const std::vector<std::string>& providers, int intra, int inter, int graph_opt,
             int exec_mode, int log_level, const std::vector<std::pair<std::string, std::string>>& config) {
            SessionOptions o = make_options(providers, intra, inter, graph_opt, exec_mode, log_level, config);
            char* buffer = nullptr;
            Py_ssize_t size = 0;
            if (PyBytes_AsStringAndSize(data.ptr(), &buffer, &size) != 0) throw py::error_already_set();
            std::shared_ptr<Session> s;
            {
              py::gil_scoped_release release;  // `data` is immutable and held by the caller
              s = Session::open_bytes(buffer, static_cast<size_t>(size), o);
            }
            return std::make_shared<PySession>(std::move(s));
          })
      .def_property_readonly("inputs", [](const PySession& s) { return s.io_list(s.core().inputs()); })
      .def_property_readonly("outputs", [](const PySession& s) { return s.io_list(s.core().outputs()); })
      .def("run", &PySession::run, py::arg("inputs"), py::arg("outputs") = py::none(), py::arg("out") = py::none(),
           "Run the model; returns a dict of output name -> value.");
}
