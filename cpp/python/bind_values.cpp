// Python values for inputs that are not tensors: lists/tuples of arrays for
// sequences, dicts for maps, None or the value for optionals, walked along the
// type the model declares and built into onnxruntime values by the core
// (fastort/values.h).
#include "bind.h"

#include "fastort/errors.h"
#include "fastort/values.h"

namespace fastort {
namespace bind {
namespace {

std::string repr_of(py::handle obj) {
  PyObject* r = PyObject_Repr(obj.ptr());
  if (r == nullptr) {
    PyErr_Clear();
    return "<" + type_name(obj) + ">";
  }
  return text_of(py::reinterpret_steal<py::object>(r));
}

// A host array (or numpy scalar) of element type `expected` as an onnxruntime
// tensor over its memory; `held` keeps that memory.
Ort::Value tensor_of(py::handle obj, ElementType expected, const std::string& what, Held& held,
                     RequestBudget* budget) {
  TensorView v = view_of_array(obj, what.c_str(), "", held, expected, budget);
  if (!v.device.is_cpu())
    throw InvalidInputError(what + " is on " + v.device.str() +
                            ": sequence, map and optional inputs take host arrays (e.g. numpy)");
  if (v.type != expected)
    throw InvalidInputError(what + ": expected " + std::string(element_type_name(expected)) + ", got " +
                            element_type_name(v.type));
  return host_tensor(v, what);
}

// Whether `obj` is an int (not a bool) or a numpy integer.
bool is_integer(py::handle obj, const py::module_& np) {
  return !PyBool_Check(obj.ptr()) && (PyLong_Check(obj.ptr()) || py::isinstance(obj, np.attr("integer")));
}

int64_t integer_of(py::handle obj, const std::string& what) {
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(obj.ptr()));
  if (!index) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow != 0) throw InvalidInputError(what + ": " + repr_of(obj) + " does not fit in int64");
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<int64_t>(v);
}

// str (UTF-8) or bytes; false for other types.
bool string_of(py::handle obj, std::string& out, const std::string& what) {
  if (PyUnicode_Check(obj.ptr())) {
    Py_ssize_t len = 0;
    const char* s = PyUnicode_AsUTF8AndSize(obj.ptr(), &len);
    if (s == nullptr) {
      PyErr_Clear();
      throw InvalidInputError(what + ": " + repr_of(obj) + " cannot be encoded as UTF-8 (it holds a lone surrogate)");
    }
    out.assign(s, static_cast<size_t>(len));
    return true;
  }
  if (PyBytes_Check(obj.ptr())) {
    out.assign(PyBytes_AS_STRING(obj.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(obj.ptr())));
    return true;
  }
  return false;
}

// A dict as an onnxruntime map of the declared type `t` (key type t.element,
// values t.inner's element type).
Ort::Value map_of(py::handle obj, const ValueType& t, const std::string& what, RequestBudget* budget) {
  if (!PyDict_Check(obj.ptr()))
    throw InvalidInputError(what + " is a " + t.type_string + ": expected a dict, got " + type_name(obj));
  const ElementType key_type = t.element;
  const ElementType value_type = t.inner && t.inner->kind == ValueKind::Tensor ? t.inner->element
                                                                                : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  if (!map_supported(key_type, value_type))
    throw InvalidInputError(what + " is a " + t.type_string +
                            ": onnxruntime's C API makes maps of int64 or string keys to int64, float, double or "
                            "string values only");
  const size_t n = static_cast<size_t>(PyDict_Size(obj.ptr()));
  if (budget != nullptr) budget->take(n * 2 * sizeof(int64_t), what + " (" + std::to_string(n) + " entries)");
  const bool string_keys = key_type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
  const py::module_ np = py::module_::import("numpy");
  std::vector<int64_t> int_keys, int_values;
  std::vector<std::string> str_keys, str_values;
  std::vector<float> floats;
  std::vector<double> doubles;
  PyObject *key = nullptr, *value = nullptr;
  Py_ssize_t pos = 0;
  while (PyDict_Next(obj.ptr(), &pos, &key, &value)) {
    const py::handle k(key), v(value);
    if (string_keys) {
      std::string s;
      if (!string_of(k, s, what + ": key"))
        throw InvalidInputError(what + ": key " + repr_of(k) + " is " + type_name(k) + ", expected str (" +
                                t.type_string + ")");
      if (budget != nullptr) budget->take(s.size(), what);
      str_keys.push_back(std::move(s));
    } else {
      if (!is_integer(k, np))
        throw InvalidInputError(what + ": key " + repr_of(k) + " is " + type_name(k) + ", expected int (" +
                                t.type_string + ")");
      int_keys.push_back(integer_of(k, what + ": key"));
    }
    const std::string at = what + ": value for key " + repr_of(k);
    switch (value_type) {
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
        if (!is_integer(v, np)) throw InvalidInputError(at + " is " + type_name(v) + ", expected int (int64)");
        int_values.push_back(integer_of(v, at));
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: {
        if (PyBool_Check(v.ptr()) || !(PyFloat_Check(v.ptr()) || is_integer(v, np) || py::isinstance(v, np.attr("floating"))))
          throw InvalidInputError(at + " is " + type_name(v) + ", expected a number (" + element_type_name(value_type) + ")");
        const double d = PyFloat_AsDouble(v.ptr());
        if (d == -1.0 && PyErr_Occurred()) throw py::error_already_set();
        if (value_type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) floats.push_back(static_cast<float>(d));
        else doubles.push_back(d);
        break;
      }
      default: {
        std::string s;
        if (!string_of(v, s, at)) throw InvalidInputError(at + " is " + type_name(v) + ", expected str");
        if (budget != nullptr) budget->take(s.size(), what);
        str_values.push_back(std::move(s));
      }
    }
  }
  const auto count = static_cast<int64_t>(n);
  std::vector<std::string_view> key_views(str_keys.begin(), str_keys.end());
  std::vector<std::string_view> value_views(str_values.begin(), str_values.end());
  TensorView keys, values;
  keys.type = key_type;
  keys.shape = {count};
  if (string_keys) keys.strings = key_views.data();
  else keys.data = int_keys.data();
  values.type = value_type;
  values.shape = {count};
  switch (value_type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: values.data = int_values.data(); break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: values.data = floats.data(); break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: values.data = doubles.data(); break;
    default: values.strings = value_views.data();
  }
  return make_map(keys, values, what);  // onnxruntime copies keys and values
}

// "a list or tuple of numpy arrays" / "... of dicts" for messages.
std::string sequence_of_what(const ValueType& t) {
  const ValueType* elem = t.inner.get();
  if (elem != nullptr && elem->kind == ValueKind::Tensor)
    return std::string("a list or tuple of numpy arrays of ") + element_type_name(elem->element);
  if (elem != nullptr && elem->kind == ValueKind::Map) return "a list or tuple of dicts";
  return "a list or tuple";
}

}  // namespace

TensorView view_of_value(py::handle obj, const IOInfo& io, Held& held, RequestBudget* budget) {
  const std::string what = "input '" + io.name + "'";
  TensorView view;
  const ValueType* t = io.value_type.get();
  if (t == nullptr) throw InvalidInputError(what + " is a " + io.type_string + ": fastort cannot pass it");
  if (t->kind == ValueKind::Optional) {
    if (obj.is_none()) {
      view.absent = true;  // left out of the feeds: onnxruntime takes it as an empty optional
      return view;
    }
    t = t->inner.get();
  } else if (obj.is_none()) {
    throw InvalidInputError(what + " is a " + io.type_string + ", which is not optional: got None");
  }
  switch (t->kind) {
    case ValueKind::Tensor:
      held.value = std::make_unique<Ort::Value>(tensor_of(obj, t->element, what, held, budget));
      break;
    case ValueKind::Sequence: {
      if (!PyList_Check(obj.ptr()) && !PyTuple_Check(obj.ptr()))
        throw InvalidInputError(what + " is a " + io.type_string + ": expected " + sequence_of_what(*t) + ", got " +
                                type_name(obj));
      const auto items = py::reinterpret_borrow<py::sequence>(obj);
      const size_t n = static_cast<size_t>(items.size());
      const ValueType& elem = *t->inner;
      if (elem.kind == ValueKind::Tensor) {
        if (n == 0) {
          view.value = empty_sequence(elem.element, what);  // the process's own, shared
          return view;
        }
        std::vector<Held> holds(n);  // the elements' memory, until onnxruntime has copied it
        std::vector<Ort::Value> parts;
        parts.reserve(n);
        for (size_t i = 0; i < n; ++i)
          parts.push_back(tensor_of(items[i], elem.element, what + ": element " + std::to_string(i), holds[i], budget));
        held.value = std::make_unique<Ort::Value>(make_sequence(parts, elem.element, what));
      } else if (elem.kind == ValueKind::Map) {
        if (n == 0)
          throw InvalidInputError(what + " is a " + io.type_string +
                                  ": an empty sequence of maps cannot be made (onnxruntime's C API CreateValue needs "
                                  "at least one value, and onnxruntime has no operator that makes one of maps)");
        std::vector<Ort::Value> parts;
        parts.reserve(n);
        for (size_t i = 0; i < n; ++i)
          parts.push_back(map_of(items[i], elem, what + ": element " + std::to_string(i), budget));
        held.value = std::make_unique<Ort::Value>(make_sequence_of_maps(parts, what));
      } else {
        throw InvalidInputError(what + " is a " + io.type_string + ": fastort builds sequences of tensors and of "
                                "maps only (what onnxruntime's C API CreateValue makes)");
      }
      break;
    }
    case ValueKind::Map:
      held.value = std::make_unique<Ort::Value>(map_of(obj, *t, what, budget));
      break;
    default:
      throw InvalidInputError(what + " is a " + io.type_string + ": fastort cannot pass values of this type");
  }
  view.value = *held.value;
  return view;
}

}  // namespace bind
}  // namespace fastort
