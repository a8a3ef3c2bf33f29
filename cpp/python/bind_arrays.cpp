// numpy arrays <-> TensorViews: inputs become views over the arrays' own
// memory; onnxruntime's output values become numpy arrays that own them.
#include "bind.h"

#include <array>
#include <unordered_map>

#include "fastort/errors.h"

namespace fastort {
namespace bind {
namespace {

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

}  // namespace

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

py::object dtype_of(ElementType type) { return dtypes().dtype_of(type); }
ElementType type_of(const py::dtype& dt) { return dtypes().type_of(dt); }
bool numpy_allocatable(ElementType type) { return !dtypes().dtype_of(type).is_none(); }

py::array new_array(py::handle dtype, size_t ndim, const int64_t* dims) {
  static_assert(sizeof(int64_t) == sizeof(Py_intptr_t), "numpy dims are int64 here");
  auto& np = py::detail::npy_api::get();
  PyObject* raw = np.PyArray_NewFromDescr_(np.PyArray_Type_, dtype.inc_ref().ptr(),  // steals the dtype
                                           static_cast<int>(ndim), reinterpret_cast<const Py_intptr_t*>(dims),
                                           nullptr, nullptr, 0, nullptr);
  if (raw == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::array>(raw);
}

// Python's message of the exception being handled, as an InvalidInputError.
[[noreturn]] void rethrow_as_invalid(py::error_already_set& e, const std::string& what) {
  throw InvalidInputError(what + ": " + std::string(py::str(e.value())));
}

// Turns a numpy array into a view over its memory. Non-contiguous or byte-swapped
// arrays are converted once (documented); everything else is used in place.
// `expected` (when known) lets a string/object array meant for a non-string
// tensor fail on its dtype before its elements are looked at.
TensorView view_of_array(py::handle obj, const char* kind, const std::string& name, Held& held,
                         ElementType expected, RequestBudget* budget) {
  auto what = [&] { return name.empty() ? std::string(kind) : std::string(kind) + " '" + name + "'"; };  // on failure only
  if (!py::isinstance<py::array>(obj)) {
    if (py::isinstance(obj, py::module_::import("numpy").attr("generic"))) {
      obj = held.array = py::array::ensure(obj);
    } else if (py::hasattr(obj, "__dlpack_device__") || py::hasattr(obj, "__cuda_array_interface__")) {
      return view_of_device_object(obj, kind, name, held, expected);
    } else if (obj.is_none()) {
      throw InvalidInputError(what() + ": got None, expected a numpy.ndarray" +
                              (expected == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
                                   ? std::string()
                                   : std::string(" of ") + element_type_name(expected)) +
                              " (it is not optional)");
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


py::object slice_to_python(OutputSlice& slice) {
  if (slice.value != nullptr) return to_python(*slice.value, slice.owner);
  if (slice.is_strings) return strings_to_array(slice.strings, slice.view.shape);
  return numpy_view(slice.view, &slice.strides, slice.owner);
}

void bind_arrays(py::module_& m) {
  m.def(
      "_bound_view",
      [](py::handle obj) {  // for tests: what run() would hand onnxruntime for `obj`
        Held held;
        TensorView v = view_of_array(obj, "input", "x", held);
        return py::make_tuple(reinterpret_cast<uintptr_t>(v.data), v.device.str(), v.shape);
      },
      py::arg("obj"));
}

}  // namespace bind
}  // namespace fastort
