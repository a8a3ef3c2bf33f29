// C++ exceptions -> the Python classes of fastort.errors.
#include "bind.h"

#include "fastort/errors.h"

namespace fastort {
namespace bind {
namespace {

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

}  // namespace

py::object exception_object(std::exception_ptr p) {
  auto [type, msg] = python_error(p);
  return py::reinterpret_borrow<py::object>(type)(message_of(msg));
}

GilRef::~GilRef() {
  if (obj_ == nullptr || !Py_IsInitialized()) return;  // at interpreter exit: leak, never crash
  PyGILState_STATE state = PyGILState_Ensure();
  Py_DECREF(obj_);
  PyGILState_Release(state);
}

void bind_errors(py::module_& m) {
  py::register_exception_translator(&translate_errors);
  m.def("_set_error_types", &set_error_types, py::arg("types"));
}

}  // namespace bind
}  // namespace fastort
