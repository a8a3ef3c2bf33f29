// The Python module fastort._core: the only file that knows about Python.
// numpy arrays become TensorViews over their own memory; onnxruntime's output
// values become numpy arrays that own them. The GIL is released while
// onnxruntime loads or runs a model.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <tuple>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "batcher.h"
#include "bind_devices.h"
#include "device.h"
#include "errors.h"
#include "pool.h"
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
  py::handle base, runtime_load, model_load, invalid_input, too_large, run, queue_full, timeout, closed;
};
ErrorTypes g_errors;

void set_error_types(const py::dict& types) {
  auto get = [&](const char* key) { return py::object(types[key]).release(); };
  g_errors = {get("base"),       get("runtime_load"), get("model_load"), get("invalid_input"), get("too_large"),
              get("run"),        get("queue_full"),   get("timeout"),    get("closed")};
}

// The Python class and message for a C++ exception.
std::pair<PyObject*, std::string> python_error(std::exception_ptr p) {
  auto pick = [](py::handle type, PyObject* fallback) { return type ? type.ptr() : fallback; };
  try {
    std::rethrow_exception(p);
  } catch (const RequestTooLargeError& e) {
    return {pick(g_errors.too_large, PyExc_ValueError), e.what()};
  } catch (const InvalidInputError& e) {
    return {pick(g_errors.invalid_input, PyExc_ValueError), e.what()};
  } catch (const ModelLoadError& e) {
    return {pick(g_errors.model_load, PyExc_ValueError), e.what()};
  } catch (const RunError& e) {
    return {pick(g_errors.run, PyExc_RuntimeError), e.what()};
  } catch (const RuntimeLoadError& e) {
    return {pick(g_errors.runtime_load, PyExc_ImportError), e.what()};
  } catch (const QueueFullError& e) {
    return {pick(g_errors.queue_full, PyExc_RuntimeError), e.what()};
  } catch (const TimeoutError& e) {
    return {pick(g_errors.timeout, PyExc_TimeoutError), e.what()};
  } catch (const ClosedError& e) {
    return {pick(g_errors.closed, PyExc_RuntimeError), e.what()};
  } catch (const Error& e) {
    return {pick(g_errors.base, PyExc_RuntimeError), e.what()};
  } catch (const Ort::Exception& e) {
    return {pick(g_errors.run, PyExc_RuntimeError), e.what()};
  } catch (const std::exception& e) {
    return {pick(g_errors.base, PyExc_RuntimeError), e.what()};
  }
}

// A message as a Python str. onnxruntime's messages may quote bytes from the
// model that are not UTF-8: those are escaped (\xNN), never an error.
py::str message_of(const std::string& msg) {
  PyObject* s = PyUnicode_DecodeUTF8(msg.data(), static_cast<Py_ssize_t>(msg.size()), "backslashreplace");
  if (s == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

void translate_errors(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const Error&) {
    auto [type, msg] = python_error(p);
    PyErr_SetObject(type, message_of(msg).ptr());
  } catch (const Ort::Exception&) {
    auto [type, msg] = python_error(p);
    PyErr_SetObject(type, message_of(msg).ptr());
  }
}

// An exception instance (not raised) for a failed request.
py::object exception_object(std::exception_ptr p) {
  auto [type, msg] = python_error(p);
  return py::reinterpret_borrow<py::object>(type)(message_of(msg));
}

// A reference to a Python object that may be dropped on a thread without the GIL.
class GilRef {
 public:
  explicit GilRef(py::object obj) : obj_(obj.release().ptr()) {}
  GilRef(const GilRef&) = delete;
  GilRef& operator=(const GilRef&) = delete;
  ~GilRef() {
    if (obj_ == nullptr || !Py_IsInitialized()) return;  // at interpreter exit: leak, never crash
    PyGILState_STATE state = PyGILState_Ensure();
    Py_DECREF(obj_);
    PyGILState_Release(state);
  }
  py::object get() const { return py::reinterpret_borrow<py::object>(obj_); }

 private:
  PyObject* obj_;
};

// ---------------------------------------------------------------- dtypes ----

constexpr size_t kNumTypes = 32;

// numpy dtype <-> onnxruntime element type. ml_dtypes (bfloat16, float8) is
// imported the first time such a dtype is met or needed.
class DtypeTable {
 public:
  ElementType type_of(const py::dtype& dt) {
    const int num = dt.num();
    if (dt.kind() == 'T') return ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;  // numpy 2's StringDType
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

// str(obj) as UTF-8 for messages and lookups; never throws on lone surrogates
// (escaped as \udXXX) or on a __str__ that fails.
std::string text_of(py::handle obj) {
  PyObject* s = PyUnicode_Check(obj.ptr()) ? (Py_INCREF(obj.ptr()), obj.ptr()) : PyObject_Str(obj.ptr());
  if (s == nullptr) {
    PyErr_Clear();
    return "<" + type_name(obj) + ">";
  }
  PyObject* b = PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace");
  Py_DECREF(s);
  if (b == nullptr) {
    PyErr_Clear();
    return "<" + type_name(obj) + ">";
  }
  std::string out(PyBytes_AS_STRING(b), static_cast<size_t>(PyBytes_GET_SIZE(b)));
  Py_DECREF(b);
  return out;
}

// ---------------------------------------------------------------- inputs ----

// Keeps what a TensorView points into alive for the length of a run.
struct Held {
  py::object array;
  std::shared_ptr<dlpack::ManagedTensor> dl;  // a consumed DLPack tensor, released with its deleter
  std::vector<std::string> utf8;  // string tensors: the encoded elements
  std::vector<std::string_view> views;
};

// The machine's physical memory: a copy larger than this can never succeed,
// and with memory overcommit the attempt may end in the OOM killer rather than
// a MemoryError, so such a request is refused even without max_request_bytes.
size_t physical_memory() noexcept {
  static const size_t bytes = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : SIZE_MAX;
  }();
  return bytes;
}

// What a request's inputs may still take of max_request_bytes; checked while
// parsing, before an input is copied (non-contiguous) or its strings encoded.
struct Budget {
  size_t max_bytes = 0;  // 0: no bound (but never more than physical memory)
  size_t used = 0;
  void take(size_t bytes, const std::string& what) {
    if (max_bytes == 0) {
      if (bytes > physical_memory())
        throw RequestTooLargeError(what + " needs more memory than this machine has (" +
                                   std::to_string(physical_memory()) + " bytes)");
      return;
    }
    if (__builtin_add_overflow(used, bytes, &used) || used > max_bytes)
      throw RequestTooLargeError(what + " brings the request to more than max_request_bytes=" +
                                 std::to_string(max_bytes) + " bytes");
  }
};

TensorView view_of_array(py::handle obj, const char* kind, const std::string& name, Held& held,
                         ElementType expected = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED, Budget* budget = nullptr);

// Python's message of the exception being handled, as an InvalidInputError.
[[noreturn]] void rethrow_as_invalid(py::error_already_set& e, const std::string& what) {
  throw InvalidInputError(what + ": " + std::string(py::str(e.value())));
}

// An object of another library: a DLPack producer (torch, CuPy, JAX, numpy's
// __dlpack__...) or a __cuda_array_interface__ one (Numba...). Host tensors
// become numpy arrays over the same memory (numpy.from_dlpack: no copy); CUDA
// tensors are read in place on the device.
// Kept out of line (and out of the numpy fast path's code).
[[gnu::noinline, gnu::cold]] TensorView view_of_device_object(py::handle obj, const char* kind,
                                                              const std::string& name, Held& held,
                                                              ElementType expected) {
  const std::string what = std::string(kind) + " '" + name + "'";
  if (py::hasattr(obj, "__dlpack_device__")) {
    int device_type = 0, device_id = 0;
    try {
      py::object dev = obj.attr("__dlpack_device__")();
      if (!py::isinstance<py::tuple>(dev) || py::len(dev) != 2)
        throw InvalidInputError(what + ": __dlpack_device__ must return (device_type, device_id), got " +
                                std::string(py::repr(dev)));
      device_type = py::reinterpret_borrow<py::tuple>(dev)[0].cast<int>();
      device_id = py::reinterpret_borrow<py::tuple>(dev)[1].cast<int>();
    } catch (py::error_already_set& e) {
      rethrow_as_invalid(e, what + ": __dlpack_device__ failed");
    } catch (const py::cast_error& e) {
      throw InvalidInputError(what + ": __dlpack_device__ must return two ints: " + e.what());
    }
    if (device_type == dlpack::kCPU || device_type == dlpack::kCUDAHost) {
      py::object arr;
      try {
        arr = py::module_::import("numpy").attr("from_dlpack")(obj);
      } catch (py::error_already_set& e) {
        rethrow_as_invalid(e, what + " (" + type_name(obj) + ") cannot be read through DLPack");
      }
      held.array = arr;
      return view_of_array(arr, kind, name, held, expected);
    }
    // The producer orders its pending work on a stream of ours (DLPack's
    // `stream` argument: no host wait on its side), and we wait for that one
    // stream before onnxruntime, whose stream is not ordered after the
    // producer's, reads the tensor. Without the CUDA runtime in the process
    // (no CUDA engine: this input is refused anyway) no stream is passed.
    void* stream = device_type == dlpack::kCUDA ? cuda::input_stream(device_id) : nullptr;
    py::object capsule;
    try {
      capsule = stream != nullptr ? obj.attr("__dlpack__")(py::arg("stream") = reinterpret_cast<uintptr_t>(stream))
                                  : obj.attr("__dlpack__")();
    } catch (py::error_already_set& e) {
      rethrow_as_invalid(e, what + " (" + type_name(obj) + ") cannot be exported with DLPack");
    }
    auto* managed = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
    if (managed == nullptr) {
      PyErr_Clear();
      throw InvalidInputError(what + ": __dlpack__ did not return a DLPack 'dltensor' capsule");
    }
    // The capsule is ours now: mark it used so that it does not free the tensor too.
    PyCapsule_SetName(capsule.ptr(), "used_dltensor");
    held.dl = std::shared_ptr<dlpack::ManagedTensor>(managed, [](dlpack::ManagedTensor* m) {
      if (m->deleter != nullptr) m->deleter(m);
    });
    held.array = py::reinterpret_borrow<py::object>(obj);
    TensorView view = view_of_dlpack(managed->dl_tensor, what);
    if (stream != nullptr) {
      py::gil_scoped_release release;
      cuda::synchronize(stream);
    }
    return view;
  }
  // __cuda_array_interface__ (version 2 or 3)
  TensorView view;
  try {
    py::dict cai = obj.attr("__cuda_array_interface__");
    py::tuple shape = cai["shape"];
    py::dtype dt = py::dtype::from_args(cai["typestr"]);
    py::tuple data = cai["data"];
    if (cai.contains("mask") && !cai["mask"].is_none())
      throw InvalidInputError(what + ": masked __cuda_array_interface__ arrays are not supported");
    view.type = dtypes().type_of(dt);
    if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED || view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING)
      throw InvalidInputError(what + ": dtype " + std::string(py::str(dt)) + " is not supported on the device");
    for (py::handle d : shape) view.shape.push_back(d.cast<int64_t>());
    view.data = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
    if (cai.contains("strides") && !cai["strides"].is_none()) {
      int64_t expected_stride = dt.itemsize();
      py::tuple strides = cai["strides"];
      for (size_t d = view.shape.size(); d-- > 0;) {
        if (view.shape[d] != 1 && strides[d].cast<int64_t>() != expected_stride)
          throw InvalidInputError(what + " (shape " + shape_to_string(view.shape) +
                                  ") is not C-contiguous: make it contiguous first");
        expected_stride *= view.shape[d];
      }
    }
  } catch (const Error&) {
    throw;
  } catch (py::error_already_set& e) {
    rethrow_as_invalid(e, what + ": unreadable __cuda_array_interface__");
  } catch (const std::exception& e) {  // pybind11's cast and type errors
    throw InvalidInputError(what + ": unreadable __cuda_array_interface__: " + e.what());
  }
  view.device = Device{DeviceType::Cuda, cuda::device_of_pointer(view.data)};
  held.array = py::reinterpret_borrow<py::object>(obj);
  // Version 3: a producer's stream with pending work on the array (None: none).
  uintptr_t producer_stream = 0;
  try {
    py::dict cai = obj.attr("__cuda_array_interface__");
    if (cai.contains("stream") && !cai["stream"].is_none()) producer_stream = cai["stream"].cast<uintptr_t>();
  } catch (const std::exception&) {
    throw InvalidInputError(what + ": the __cuda_array_interface__ 'stream' must be an int or None");
  }
  // Without the CUDA runtime in the process there is no CUDA engine, and the
  // input is refused by the engine's device check: nothing to wait for.
  if (producer_stream != 0 && cuda::unavailable_reason().empty()) {
    py::gil_scoped_release release;
    cuda::synchronize(reinterpret_cast<void*>(producer_stream));
  }
  return view;
}

// Turns a numpy array into a view over its memory. Non-contiguous or byte-swapped
// arrays are converted once (documented); everything else is used in place.
// `expected` (when known) lets a string/object array meant for a non-string
// tensor fail on its dtype before its elements are looked at.
TensorView view_of_array(py::handle obj, const char* kind, const std::string& name, Held& held,
                         ElementType expected, Budget* budget) {
  auto what = [&] { return std::string(kind) + " '" + name + "'"; };  // built only on failure
  if (!py::isinstance<py::array>(obj)) {
    if (py::isinstance(obj, py::module_::import("numpy").attr("generic"))) {
      obj = held.array = py::array::ensure(obj);
    } else if (py::hasattr(obj, "__dlpack_device__") || py::hasattr(obj, "__cuda_array_interface__")) {
      return view_of_device_object(obj, kind, name, held, expected);
    } else {
      throw InvalidInputError(what() + ": expected a numpy.ndarray, got " + type_name(obj) +
                              " (wrap it with numpy.asarray(..., dtype=...))");
    }
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  py::dtype dt = arr.dtype();
  TensorView view;
  view.type = dtypes().type_of(dt);
  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED)
    throw InvalidInputError(what() + ": numpy dtype " + std::string(py::str(dt)) + " is not supported");
  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING && expected != ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED &&
      expected != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING)
    throw InvalidInputError(what() + ": expected dtype " + element_type_name(expected) + ", got " +
                            (dt.kind() == 'O' ? "object" : "string"));

  const char order = dt.byteorder();
  const bool swapped = order == '>' && dt.itemsize() > 1;  // this is little-endian-only code
  if (view.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
    const size_t nbytes = static_cast<size_t>(arr.nbytes());
    const bool copy = swapped || !(arr.flags() & py::array::c_style);
    if (budget != nullptr && (budget->max_bytes != 0 || copy))
      budget->take(nbytes, what() + " (" + std::to_string(nbytes) + " bytes)");
    if (copy) {
      try {
        arr = py::module_::import("numpy").attr("ascontiguousarray")(arr, dt.attr("newbyteorder")("="));
      } catch (py::error_already_set& e) {
        if (!e.matches(PyExc_MemoryError)) throw;
        throw RequestTooLargeError(what() + ": no memory for a contiguous copy of this non-contiguous array (" +
                                   std::to_string(nbytes) + " bytes); pass a C-contiguous array or set max_request_bytes");
      }
    }
  }
  held.array = arr;
  const auto ndim = static_cast<size_t>(arr.ndim());
  view.shape.resize(ndim);
  for (size_t d = 0; d < ndim; ++d) view.shape[d] = static_cast<int64_t>(arr.shape(static_cast<py::ssize_t>(d)));

  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
    // Each element costs a view (and a string) before its contents: charged up
    // front, so that a huge array of empty strings is refused before the copy.
    const size_t count = static_cast<size_t>(arr.size());
    if (budget != nullptr) budget->take(count * sizeof(std::string_view), what() + " (" + std::to_string(count) + " strings)");
    py::list items;
    try {
      items = arr.attr("ravel")().attr("tolist")();
    } catch (py::error_already_set& e) {
      if (e.matches(PyExc_MemoryError))
        throw RequestTooLargeError(what() + ": no memory for the " + std::to_string(count) +
                                   " strings of this array; set max_request_bytes");
      // e.g. a numpy str array whose memory holds code points past U+10FFFF
      throw InvalidInputError(what() + ": its string elements cannot be read (" + text_of(e.type().attr("__name__")) +
                              ": " + text_of(e.value()) + ")");
    }
    held.utf8.reserve(items.size());
    size_t i = 0;
    for (py::handle item : items) {
      if (PyUnicode_Check(item.ptr())) {
        Py_ssize_t len = 0;
        const char* s = PyUnicode_AsUTF8AndSize(item.ptr(), &len);
        if (s == nullptr) {
          PyErr_Clear();
          throw InvalidInputError(what() + ": element " + std::to_string(i) +
                                  " cannot be encoded as UTF-8 (it holds a lone surrogate)");
        }
        if (budget != nullptr) budget->take(static_cast<size_t>(len), what());
        held.utf8.emplace_back(s, static_cast<size_t>(len));
      } else if (PyBytes_Check(item.ptr())) {
        if (budget != nullptr) budget->take(static_cast<size_t>(PyBytes_GET_SIZE(item.ptr())), what());
        held.utf8.emplace_back(PyBytes_AS_STRING(item.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(item.ptr())));
      } else {
        throw InvalidInputError(what() + ": string tensors take str or bytes elements, element " + std::to_string(i) +
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

py::object strings_to_array(const std::vector<std::string>& items, const std::vector<int64_t>& shape) {
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

// A numpy array over `view`'s memory that keeps `owner` alive: no copy.
py::object numpy_view(const TensorView& view, const std::vector<int64_t>* byte_strides, std::shared_ptr<void> owner) {
  py::object dt = dtypes().dtype_of(view.type);
  if (dt.is_none())
    throw RunError(std::string("output element type ") + element_type_name(view.type) + " has no numpy equivalent");
  std::vector<py::ssize_t> dims(view.shape.begin(), view.shape.end());
  std::vector<py::ssize_t> strides(dims.size());
  if (byte_strides != nullptr) {
    strides.assign(byte_strides->begin(), byte_strides->end());
  } else {
    py::ssize_t stride = static_cast<py::ssize_t>(element_size(view.type));
    for (size_t d = dims.size(); d-- > 0;) {
      strides[d] = stride;
      stride *= dims[d];
    }
  }
  auto dtype = py::reinterpret_borrow<py::dtype>(dt);
  if (view.data == nullptr) return py::array(dtype, dims, strides);
  auto holder = std::make_unique<std::shared_ptr<void>>(std::move(owner));
  py::capsule base(holder.get(), [](void* p) { std::unique_ptr<std::shared_ptr<void>> h(static_cast<std::shared_ptr<void>*>(p)); });
  holder.release();
  return py::array(dtype, dims, strides, view.data, base);
}

// Tensors become numpy arrays over onnxruntime's buffer (kept alive by `owner`),
// string tensors object arrays of str, sequences lists and maps dicts.
py::object to_python(Ort::Value& value, const std::shared_ptr<void>& owner) {
  if (!value.HasValue()) return py::none();
  if (value.IsTensor()) {
    TensorView view = view_of(value);
    if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) return strings_to_array(string_contents(value), view.shape);
    return numpy_view(view, nullptr, owner);
  }
  const auto kind = value.GetTypeInfo().GetONNXType();
  std::vector<py::object> parts;
  for (Ort::Value& part : elements_of(value)) {
    auto part_owner = std::make_shared<Ort::Value>(std::move(part));
    parts.push_back(to_python(*part_owner, part_owner));
  }
  if (kind == ONNX_TYPE_SEQUENCE) {
    py::list out(parts.size());
    for (size_t i = 0; i < parts.size(); ++i) out[i] = parts[i];
    return std::move(out);
  }
  if (kind == ONNX_TYPE_MAP && parts.size() == 2) {
    py::list keys = parts[0].attr("tolist")();
    py::list values = parts[1].attr("tolist")();
    py::dict out;
    for (size_t i = 0; i < keys.size(); ++i) out[keys[i]] = values[i];
    return std::move(out);
  }
  throw RunError("an output is of a kind fastort cannot convert (not a tensor, sequence or map)");
}

py::object owned_to_python(Ort::Value&& value) {
  auto owner = std::make_shared<Ort::Value>(std::move(value));
  return to_python(*owner, owner);
}

// ---------------------------------------------------------------- Tensor ----

// An output left where onnxruntime put it (host or device memory), exported
// with DLPack (and __cuda_array_interface__ on CUDA) without a copy.
struct PyTensor {
  std::shared_ptr<void> owner;  // keeps the buffer alive
  TensorView view;

  py::tuple shape() const {
    py::tuple t(view.shape.size());
    for (size_t d = 0; d < view.shape.size(); ++d) t[d] = py::int_(view.shape[d]);
    return t;
  }
  size_t nbytes() const { return checked_element_count(view.shape, element_size(view.type), "tensor") * element_size(view.type); }

  py::object numpy() const {
    if (view.device.is_cpu()) return numpy_view(view, nullptr, owner);
    py::object dt = dtypes().dtype_of(view.type);
    if (dt.is_none()) throw RunError(std::string("element type ") + element_type_name(view.type) + " has no numpy equivalent");
    std::vector<py::ssize_t> dims(view.shape.begin(), view.shape.end());
    py::array host(py::reinterpret_borrow<py::dtype>(dt), dims);
    void* dst = host.mutable_data();
    const size_t bytes = nbytes();
    {
      py::gil_scoped_release release;
      cuda::copy_to_host(dst, view.data, bytes);
    }
    return std::move(host);
  }

  py::tuple dlpack_device() const {
    const int type = view.device.is_cpu() ? static_cast<int>(dlpack::kCPU) : static_cast<int>(dlpack::kCUDA);
    const int id = view.device.is_cpu() ? 0 : view.device.id;
    return py::make_tuple(type, id);
  }

  // The stream argument needs no action: the run that made this tensor has
  // finished on its stream before the tensor was handed out.
  py::object dlpack(py::object stream, py::object max_version, py::object dl_device, py::object copy) const {
    (void)stream;
    (void)max_version;
    if (!dl_device.is_none() && !dl_device.equal(dlpack_device()))
      throw py::buffer_error("fastort tensor on " + view.device.str() + " cannot be exported to another device");
    if (!copy.is_none() && copy.cast<bool>())
      throw py::buffer_error("fastort tensors are exported without copies (copy=True is not supported)");
    dlpack::ManagedTensor* managed = export_dlpack(view, owner);
    PyObject* capsule = PyCapsule_New(managed, "dltensor", [](PyObject* cap) {
      if (!PyCapsule_IsValid(cap, "dltensor")) return;  // consumed: the consumer calls the deleter
      auto* m = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
      if (m != nullptr && m->deleter != nullptr) m->deleter(m);
    });
    if (capsule == nullptr) {
      managed->deleter(managed);
      throw py::error_already_set();
    }
    return py::reinterpret_steal<py::object>(capsule);
  }

  py::dict cuda_array_interface() const {
    if (view.device.is_cpu()) throw py::attribute_error("a fastort tensor in host memory has no __cuda_array_interface__");
    py::dict d;
    d["shape"] = shape();
    d["typestr"] = dtypes().dtype_of(view.type).attr("str");
    d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(view.data), false);
    d["strides"] = py::none();
    d["version"] = 3;
    d["stream"] = py::none();  // ready: nothing to wait for
    return d;
  }

  std::string repr() const {
    return "<fastort.Tensor shape=" + shape_to_string(view.shape) + " dtype=" + element_type_name(view.type) +
           " device=" + view.device.str() + ">";
  }
};

// A tensor output as a PyTensor; other values (strings, sequences, maps) as run() gives them.
py::object owned_to_tensor(Ort::Value&& value) {
  auto owner = std::make_shared<Ort::Value>(std::move(value));
  if (!owner->HasValue() || !owner->IsTensor()) return to_python(*owner, owner);
  TensorView view = view_of(*owner);
  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING || element_size(view.type) == 0) return to_python(*owner, owner);
  view.device = device_of(owner->GetConst());
  return py::cast(PyTensor{owner, std::move(view)});
}

py::object slice_to_python(OutputSlice& slice) {
  if (slice.value != nullptr) return to_python(*slice.value, slice.owner);
  if (slice.is_strings) return strings_to_array(slice.strings, slice.view.shape);
  return numpy_view(slice.view, &slice.strides, slice.owner);
}

// --------------------------------------------------------------- session ----

std::string names_of(const std::vector<IOInfo>& ios) {
  std::string s;
  for (const auto& io : ios) s += (s.empty() ? "" : ", ") + io.name;
  return s.empty() ? "none" : s;
}

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

struct SyncWaiter {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Outcome outcome;
};

// Finished asynchronous requests, handed to fastort's completion thread.
struct Completion {
  std::shared_ptr<GilRef> token;  // the caller's future
  Outcome outcome;
  std::vector<size_t> selected;
};

class CompletionQueue {
 public:
  void push(Completion&& c) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back(std::move(c));
    }
    cv_.notify_one();
  }
  // Waits up to `timeout` for completions; `closed` is set once close() was
  // called and everything was handed out.
  std::vector<Completion> pop(std::chrono::microseconds timeout, bool& closed) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !items_.empty() || closed_; });
    std::vector<Completion> out(std::make_move_iterator(items_.begin()), std::make_move_iterator(items_.end()));
    items_.clear();
    closed = closed_ && out.empty();
    return out;
  }
  void close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Completion> items_;
  bool closed_ = false;
};

Clock::time_point deadline_after(double timeout_s) {
  if (!(timeout_s > 0) || timeout_s > 1e9) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
}

class PyEngine {
 public:
  explicit PyEngine(std::shared_ptr<SessionPool> pool) : pool_(std::move(pool)) {
    for (const auto& io : pool_->front().inputs()) input_names_.push_back(py::str(io.name));
    for (const auto& io : pool_->front().outputs()) output_names_.push_back(py::str(io.name));
  }

  ~PyEngine() {
    if (batcher_) {
      py::gil_scoped_release release;  // workers may need the GIL to drop Python references
      batcher_->close(true);
    }
  }

  const Session& core() const { return pool_->front(); }
  size_t replicas() const { return pool_->size(); }
  const SessionPool& pool() const { return *pool_; }

  // Turns on the request queue: the batcher, or, with max_batch_size 1, the
  // scheduler behind submit(). With route_runs, run() goes through it too.
  void start_batcher(const BatcherOptions& options, bool route_runs) {
    if (batcher_) throw Error("the batcher is already running");
    batcher_ = std::make_unique<Batcher>(pool_, options);
    completions_ = std::make_shared<CompletionQueue>();
    route_runs_ = route_runs;
  }
  bool has_batcher() const { return batcher_ != nullptr; }
  bool batching() const { return batcher_ && batcher_->batching() && batcher_->options().max_batch_size > 1; }
  std::string unbatchable_reason() const { return batcher_ ? batcher_->unbatchable_reason() : ""; }

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

  py::dict run(py::handle inputs, py::handle outputs, py::handle out, double timeout_s, int priority) const {
    if (route_runs_ && out.is_none()) return run_queued(inputs, outputs, timeout_s, priority);
    const size_t n = core().inputs().size();
    std::vector<Held> held(n);
    std::vector<TensorView> views(n);
    parse_inputs(inputs, held, views);
    pool_->check_limits(views);
    std::vector<size_t> selected = select_outputs(outputs);
    std::vector<py::object> out_arrays(selected.size());
    std::vector<TensorView> out_views = parse_out(out, selected, out_arrays);
    if (out_views.empty() && on_host(views)) {
      py::dict result;
      if (run_into_guess(views, selected, result)) return result;
    }
    std::vector<Ort::Value> results;
    {
      py::gil_scoped_release release;
      results = pool_->run(views, selected, out_views);
    }
    if (out_views.empty()) remember_shapes(views, selected, results);
    py::dict result;
    for (size_t k = 0; k < selected.size(); ++k)
      result[output_names_[selected[k]]] = out_arrays[k] ? out_arrays[k] : owned_to_python(std::move(results[k]));
    return result;
  }

  // Runs unbatched and returns every tensor output as a Tensor left where
  // onnxruntime put it: in device memory with `to_device` (CUDA engines), else
  // in host memory. Device inputs are read in place.
  py::dict run_tensors(py::handle inputs, py::handle outputs, bool to_device) const {
    const size_t n = core().inputs().size();
    std::vector<Held> held(n);
    std::vector<TensorView> views(n);
    parse_inputs(inputs, held, views);
    std::vector<size_t> selected = select_outputs(outputs);
    std::vector<Ort::Value> results;
    {
      py::gil_scoped_release release;
      results = to_device ? pool_->run_to_device(views, selected) : pool_->run(views, selected);
    }
    py::dict result;
    for (size_t k = 0; k < selected.size(); ++k) result[output_names_[selected[k]]] = owned_to_tensor(std::move(results[k]));
    return result;
  }

  std::string device() const { return core().device().str(); }

  // Queues a request; `token` (a future) comes back from pop_completions().
  uint64_t submit(py::handle inputs, py::handle outputs, py::object token, double timeout_s, int priority) {
    require_batcher();
    auto held = std::make_shared<HeldInputs>();
    std::vector<size_t> selected = prepare(inputs, outputs, *held);
    Request request;
    request.inputs = held->views;
    request.deadline = deadline_after(timeout_s);
    request.priority = priority;
    request.keepalive = held;
    auto tok = std::make_shared<GilRef>(std::move(token));
    request.done = [queue = completions_, tok, selected](Outcome&& outcome) {
      queue->push(Completion{tok, std::move(outcome), selected});
    };
    return batcher_->submit(std::move(request));
  }

  bool cancel(uint64_t id) { return batcher_ && batcher_->cancel(id); }

  // [(token, result dict or None, exception or None)], or None once closed and drained.
  py::object pop_completions(double timeout_s) {
    require_batcher();
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
      out.append(py::make_tuple(c.token->get(), result, error));
    }
    return std::move(out);
  }

  void close(bool drain) {
    if (!batcher_) return;
    {
      py::gil_scoped_release release;
      batcher_->close(drain);
    }
    completions_->close();
  }

  py::dict stats() const {
    py::dict d;
    if (!batcher_) return d;
    BatcherStats s = batcher_->stats();
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
    return d;
  }

  void reset_stats() {
    if (batcher_) batcher_->reset_stats();
  }

 private:
  // Small outputs of a call whose input shapes match the previous call's are
  // allocated by numpy up front, in the shapes that call produced, and
  // onnxruntime writes straight into them: one allocation instead of an
  // onnxruntime buffer plus the object that lets numpy own it. A wrong guess
  // (outputs that depend on input values) costs one more run; after a few,
  // guessing stops for this engine.
  static constexpr size_t kGuessMaxBytes = 64 * 1024;
  static constexpr int kGuessMaxMisses = 3;

  struct ShapeGuess {
    std::mutex mu;
    std::vector<int64_t> key;  // the inputs' ranks and dims
    std::vector<size_t> outputs;
    std::vector<std::vector<int64_t>> shapes;
    int misses = 0;
    std::atomic<bool> disabled{false};  // also read without the lock
  };

  static std::vector<int64_t> shape_key(const std::vector<TensorView>& views) {
    std::vector<int64_t> key;
    for (const auto& v : views) {
      key.push_back(static_cast<int64_t>(v.shape.size()));
      key.insert(key.end(), v.shape.begin(), v.shape.end());
    }
    return key;
  }

  bool run_into_guess(const std::vector<TensorView>& views, const std::vector<size_t>& selected,
                      py::dict& result) const {
    std::vector<std::vector<int64_t>> shapes;
    {
      std::lock_guard<std::mutex> lock(guess_->mu);
      if (guess_->disabled || guess_->outputs != selected || guess_->key != shape_key(views)) return false;
      shapes = guess_->shapes;
    }
    const auto& outs = core().outputs();
    std::vector<py::object> arrays(selected.size());
    std::vector<TensorView> out_views(selected.size());
    for (size_t k = 0; k < selected.size(); ++k) {
      const ElementType type = outs[selected[k]].type;
      std::vector<py::ssize_t> dims(shapes[k].begin(), shapes[k].end());
      py::array a(py::reinterpret_borrow<py::dtype>(dtypes().dtype_of(type)), dims);
      out_views[k].type = type;
      out_views[k].shape = shapes[k];
      out_views[k].data = a.mutable_data();
      arrays[k] = std::move(a);
    }
    try {
      py::gil_scoped_release release;
      pool_->run(views, selected, out_views);
    } catch (const Error&) {
      std::lock_guard<std::mutex> lock(guess_->mu);  // maybe a wrong guess: the caller runs again
      guess_->key.clear();
      guess_->disabled = ++guess_->misses >= kGuessMaxMisses;
      return false;
    }
    for (size_t k = 0; k < selected.size(); ++k) result[output_names_[selected[k]]] = arrays[k];
    return true;
  }

  void remember_shapes(const std::vector<TensorView>& views, const std::vector<size_t>& selected,
                       std::vector<Ort::Value>& results) const {
    if (guess_->disabled) return;
    std::vector<std::vector<int64_t>> shapes;
    for (auto& v : results) {
      if (!v.IsTensor()) return;
      TensorView t = view_of(v);
      const size_t item = element_size(t.type);
      if (item == 0 || dtypes().dtype_of(t.type).is_none()) return;
      size_t bytes = item;
      for (int64_t d : t.shape) bytes *= static_cast<size_t>(d);
      if (bytes > kGuessMaxBytes || bytes == 0) return;
      shapes.push_back(std::move(t.shape));
    }
    std::lock_guard<std::mutex> lock(guess_->mu);
    guess_->key = shape_key(views);
    guess_->outputs = selected;
    guess_->shapes = std::move(shapes);
  }

  static bool on_host(const std::vector<TensorView>& views) {
    for (const auto& v : views)
      if (!v.device.is_cpu()) return false;
    return true;
  }

  void require_batcher() const {
    if (!batcher_) throw Error("this engine has no request queue (internal: start_batcher was not called)");
  }

  std::vector<size_t> prepare(py::handle inputs, py::handle outputs, HeldInputs& held) const {
    const size_t n = core().inputs().size();
    held.held.resize(n);
    held.views.resize(n);
    parse_inputs(inputs, held.held, held.views);
    return select_outputs(outputs);
  }

  py::dict outcome_dict(Outcome& outcome, const std::vector<size_t>& selected) const {
    py::dict result;
    for (size_t idx : selected) result[output_names_[idx]] = slice_to_python(outcome.outputs.at(idx));
    return result;
  }

  // Runs through the batcher and waits, GIL released; Ctrl-C cancels a queued request.
  py::dict run_queued(py::handle inputs, py::handle outputs, double timeout_s, int priority) const {
    auto held = std::make_shared<HeldInputs>();
    std::vector<size_t> selected = prepare(inputs, outputs, *held);
    if (!on_host(held->views)) {  // the queue batches host rows: device inputs run on their own
      std::vector<Ort::Value> results;
      {
        py::gil_scoped_release release;
        results = pool_->run(held->views, selected);
      }
      py::dict result;
      for (size_t k = 0; k < selected.size(); ++k) result[output_names_[selected[k]]] = owned_to_python(std::move(results[k]));
      return result;
    }
    auto waiter = std::make_shared<SyncWaiter>();
    Request request;
    request.inputs = held->views;
    request.deadline = deadline_after(timeout_s);
    request.priority = priority;
    request.keepalive = held;
    request.done = [waiter](Outcome&& outcome) {
      {
        std::lock_guard<std::mutex> lock(waiter->mu);
        waiter->outcome = std::move(outcome);
        waiter->done = true;
      }
      waiter->cv.notify_all();
    };
    const uint64_t id = batcher_->submit(std::move(request));
    for (bool done = false; !done;) {
      {
        py::gil_scoped_release release;
        std::unique_lock<std::mutex> lock(waiter->mu);
        done = waiter->cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return waiter->done; });
      }
      if (!done && PyErr_CheckSignals() != 0) {
        batcher_->cancel(id);  // a request already running completes unseen
        throw py::error_already_set();
      }
    }
    if (waiter->outcome.error) std::rethrow_exception(waiter->outcome.error);
    return outcome_dict(waiter->outcome, selected);
  }

  void parse_inputs(py::handle inputs, std::vector<Held>& held, std::vector<TensorView>& views) const {
    const auto& ins = core().inputs();
    const size_t n = ins.size();
    Budget budget{pool_->limits().max_bytes, 0};
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
        views[i] = view_of_array(item, "input", ins[i].name, held[i], ins[i].type, &budget);
      }
      if (!missing.empty() || found != static_cast<size_t>(PyDict_Size(inputs.ptr()))) {
        std::string unknown;
        for (auto kv : py::reinterpret_borrow<py::dict>(inputs)) {
          const std::string key = text_of(kv.first);
          if (!py::isinstance<py::str>(kv.first) || core().input_index(key) < 0)
            unknown += (unknown.empty() ? "'" : ", '") + key + "'";
        }
        std::string msg;
        if (!missing.empty()) msg = "missing input " + missing;
        if (!unknown.empty()) msg += (msg.empty() ? "" : "; ") + std::string("unknown input ") + unknown;
        throw InvalidInputError(msg + " (model inputs: " + names_of(ins) + ")");
      }
    } else if (PyList_Check(inputs.ptr()) || PyTuple_Check(inputs.ptr()) ||
               (n == 1 && (py::isinstance<py::array>(inputs) || py::hasattr(inputs, "__dlpack_device__") ||
                           py::hasattr(inputs, "__cuda_array_interface__")))) {
      py::sequence seq = PyList_Check(inputs.ptr()) || PyTuple_Check(inputs.ptr())
                             ? py::reinterpret_borrow<py::sequence>(inputs)
                             : py::sequence(py::make_tuple(inputs));
      if (static_cast<size_t>(seq.size()) != n)
        throw InvalidInputError("the model takes " + std::to_string(n) + " inputs (" + names_of(ins) + "), got " +
                                std::to_string(seq.size()));
      for (size_t i = 0; i < n; ++i)
        views[i] = view_of_array(seq[i], "input", ins[i].name, held[i], ins[i].type, &budget);
    } else {
      throw InvalidInputError("inputs must be a dict of name -> numpy array or a list/tuple in input order (" +
                              names_of(ins) + "), got " + type_name(inputs));
    }
  }

  std::vector<size_t> select_outputs(py::handle outputs) const {
    const auto& outs = core().outputs();
    std::vector<size_t> selected;
    if (outputs.is_none()) {
      for (size_t k = 0; k < outs.size(); ++k) selected.push_back(k);
      return selected;
    }
    if (py::isinstance<py::str>(outputs) || py::isinstance<py::bytes>(outputs) || !py::isinstance<py::iterable>(outputs))
      throw InvalidInputError("outputs must be a list of output names, got " + type_name(outputs));
    for (py::handle name : outputs) {
      const std::string s = text_of(name);
      const auto idx = core().output_index(s);
      if (idx < 0 || !py::isinstance<py::str>(name))
        throw InvalidInputError("unknown output '" + s + "' (model outputs: " + names_of(outs) + ")");
      selected.push_back(static_cast<size_t>(idx));
    }
    if (selected.empty())
      throw InvalidInputError("outputs is empty: name at least one output (model outputs: " + names_of(outs) +
                              "), or pass None for all");
    return selected;
  }

  std::vector<TensorView> parse_out(py::handle out, const std::vector<size_t>& selected,
                                    std::vector<py::object>& out_arrays) const {
    std::vector<TensorView> out_views;
    if (out.is_none()) return out_views;
    const auto& outs = core().outputs();
    if (!PyDict_Check(out.ptr())) throw InvalidInputError("out must be a dict of output name -> numpy array");
    out_views.resize(selected.size());
    for (auto kv : py::reinterpret_borrow<py::dict>(out)) {
      const std::string key = text_of(kv.first);
      const auto idx = core().output_index(key);
      size_t k = 0;
      while (k < selected.size() && static_cast<std::ptrdiff_t>(selected[k]) != idx) ++k;
      if (idx < 0 || k == selected.size()) {
        std::string requested;
        for (size_t s : selected) requested += (requested.empty() ? "" : ", ") + outs[s].name;
        throw InvalidInputError("out has a buffer for '" + key + "', which is not a requested output (requested: " +
                                (requested.empty() ? "none" : requested) + ")");
      }
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
      core().check_output_buffer(static_cast<size_t>(idx), v);
      out_views[k] = std::move(v);
      out_arrays[k] = arr;
    }
    return out_views;
  }

  std::shared_ptr<SessionPool> pool_;
  std::unique_ptr<Batcher> batcher_;
  bool route_runs_ = false;
  std::shared_ptr<CompletionQueue> completions_;
  std::unique_ptr<ShapeGuess> guess_ = std::make_unique<ShapeGuess>();
  std::vector<py::str> input_names_;
  std::vector<py::str> output_names_;
};

SessionOptions make_options(const py::dict& o) {
  SessionOptions so;
  so.providers = o["providers"].cast<std::vector<std::string>>();
  if (o.contains("provider_options"))
    so.provider_options = o["provider_options"].cast<std::vector<std::vector<std::pair<std::string, std::string>>>>();
  so.intra_op_threads = o["intra_op_threads"].cast<int>();
  so.inter_op_threads = o["inter_op_threads"].cast<int>();
  so.use_global_thread_pools = o["use_global_thread_pools"].cast<bool>();
  so.graph_optimization = static_cast<GraphOptimizationLevel>(o["graph_optimization"].cast<int>());
  so.execution_mode = static_cast<ExecutionMode>(o["execution_mode"].cast<int>());
  so.log_level = o["log_level"].cast<int>();
  so.config = o["config"].cast<std::vector<std::pair<std::string, std::string>>>();
  if (o.contains("pinned_staging_min_bytes")) so.pinned_staging_min_bytes = o["pinned_staging_min_bytes"].cast<size_t>();
  if (o.contains("ep_policy")) so.ep_policy = o["ep_policy"].cast<std::string>();
  return so;
}

// Opens `replicas` sessions of a model given as a path (str) or bytes;
// `initializers` [(name, array)] are held once and shared by every replica.
std::shared_ptr<PyEngine> open_engine(const py::object& model, const py::dict& options, const py::list& initializers) {
  SessionOptions so = make_options(options);
  const size_t replicas = options["replicas"].cast<size_t>();
  const bool share = options["share_weights"].cast<bool>();
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
  std::shared_ptr<SessionPool> pool;
  {
    py::gil_scoped_release release;
    pool = SessionPool::open(source, so, replicas, share, shared, weights);
  }
  RequestLimits limits;
  if (options.contains("max_request_bytes")) limits.max_bytes = options["max_request_bytes"].cast<size_t>();
  if (options.contains("max_request_rows")) limits.max_rows = options["max_request_rows"].cast<size_t>();
  if (options.contains("row_axis")) limits.row_axis = options["row_axis"].cast<size_t>();
  pool->set_limits(limits);
  return std::make_shared<PyEngine>(std::move(pool));
}

}  // namespace
}  // namespace fastort

PYBIND11_MODULE(_core, m) {
  using namespace fastort;
  m.doc() = "fastort's native core (C++ on the onnxruntime C++ API)";
  py::register_exception_translator(&translate_errors);
  bind_devices(m);  // plugin execution providers and EP devices (bind_devices.cpp)

  m.def("_set_error_types", &set_error_types);
  m.def("load_runtime", [](const std::string& path) { Runtime::load(path); }, py::arg("path"),
        "Load libonnxruntime from `path` (once per process).");
  m.def("runtime_loaded", &Runtime::is_loaded);
  m.def("shared_weight_file", &shared_weight_file, py::arg("initializer"));
  m.def(
      "_bound_view",
      [](py::handle obj) {  // for tests: what run() would hand onnxruntime for `obj`
        Held held;
        TensorView v = view_of_array(obj, "input", "x", held);
        return py::make_tuple(reinterpret_cast<uintptr_t>(v.data), v.device.str(), v.shape);
      },
      py::arg("obj"));
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

  py::class_<PyTensor>(m, "Tensor", "A tensor output left in onnxruntime's buffer (host or CUDA memory)")
      .def_property_readonly("shape", &PyTensor::shape)
      .def_property_readonly("dtype", [](const PyTensor& t) { return dtypes().dtype_of(t.view.type); })
      .def_property_readonly("device", [](const PyTensor& t) { return t.view.device.str(); })
      .def_property_readonly("data_ptr", [](const PyTensor& t) { return reinterpret_cast<uintptr_t>(t.view.data); })
      .def_property_readonly("nbytes", &PyTensor::nbytes)
      .def("numpy", &PyTensor::numpy, "A numpy array: over the same memory for host tensors, a copy for CUDA ones.")
      .def("__array__", [](const PyTensor& t, py::object dtype, py::object copy) {
            (void)copy;
            py::object a = t.numpy();
            return dtype.is_none() ? a : a.attr("astype")(dtype, py::arg("copy") = false);
          }, py::arg("dtype") = py::none(), py::arg("copy") = py::none())
      .def("__dlpack__", &PyTensor::dlpack, py::kw_only(), py::arg("stream") = py::none(),
           py::arg("max_version") = py::none(), py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
      .def("__dlpack_device__", &PyTensor::dlpack_device)
      .def_property_readonly("__cuda_array_interface__", &PyTensor::cuda_array_interface)
      .def("__repr__", &PyTensor::repr);

  py::class_<PyEngine, std::shared_ptr<PyEngine>>(m, "Engine")
      .def_static("open", &open_engine, py::arg("model"), py::arg("options"), py::arg("initializers") = py::list())
      .def_property_readonly("inputs", [](const PyEngine& e) { return e.io_list(e.core().inputs()); })
      .def_property_readonly("outputs", [](const PyEngine& e) { return e.io_list(e.core().outputs()); })
      .def_property_readonly("replicas", &PyEngine::replicas)
      .def_property_readonly("has_batcher", &PyEngine::has_batcher)
      .def_property_readonly("batching", &PyEngine::batching)
      .def_property_readonly("unbatchable_reason", &PyEngine::unbatchable_reason)
      .def(
          "start_batcher",
          [](PyEngine& e, size_t max_batch_size, double max_delay_us, size_t max_queue, size_t max_queue_rows,
             size_t batch_axis, int priority_levels, const std::vector<std::tuple<size_t, size_t, double>>& padding,
             bool route_runs) {
            BatcherOptions o;
            o.max_batch_size = max_batch_size;
            o.max_delay = std::chrono::microseconds(static_cast<int64_t>(max_delay_us));
            o.max_queue_requests = max_queue;
            o.max_queue_rows = max_queue_rows;
            o.batch_axis = batch_axis;
            o.priority_levels = priority_levels;
            for (const auto& [input, dim, value] : padding) o.padding.push_back(PadSpec{input, dim, value});
            e.start_batcher(o, route_runs);
          },
          py::arg("max_batch_size"), py::arg("max_delay_us"), py::arg("max_queue"), py::arg("max_queue_rows"),
          py::arg("batch_axis"), py::arg("priority_levels"), py::arg("padding"), py::arg("route_runs"))
      .def("run", &PyEngine::run, py::arg("inputs"), py::arg("outputs") = py::none(), py::arg("out") = py::none(),
           py::arg("timeout") = 0.0, py::arg("priority") = 0, "Run the model; returns a dict of output name -> value.")
      .def("run_tensors", &PyEngine::run_tensors, py::arg("inputs"), py::arg("outputs") = py::none(),
           py::arg("to_device") = false)
      .def_property_readonly("device", &PyEngine::device)
      .def_property_readonly("replica_providers", [](const PyEngine& e) { return replica_providers(e.pool()); })
      .def("submit", &PyEngine::submit, py::arg("inputs"), py::arg("outputs"), py::arg("token"),
           py::arg("timeout") = 0.0, py::arg("priority") = 0)
      .def("cancel", &PyEngine::cancel, py::arg("id"))
      .def("pop_completions", &PyEngine::pop_completions, py::arg("timeout"))
      .def("close", &PyEngine::close, py::arg("drain") = true)
      .def("stats", &PyEngine::stats)
      .def("reset_stats", &PyEngine::reset_stats);
}
