// Private header of the Python module fastort._core (cpp/python/*.cpp): what
// its files share. Only these files know about Python; the core (cpp/src) is
// plain C++.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fastort/batcher.h"
#include "fastort/engine.h"
#include "fastort/dlpack_abi.h"
#include "fastort/session.h"
#include "fastort/tensor.h"

namespace py = pybind11;

namespace fastort {
namespace bind {

// One function per concern, called by PYBIND11_MODULE (bind_module.cpp).
void bind_errors(py::module_& m);   // bind_errors.cpp: exception translation
void bind_arrays(py::module_& m);   // bind_arrays.cpp: numpy <-> TensorView
void bind_tensor(py::module_& m);   // bind_tensor.cpp: fastort.Tensor
void bind_config(py::module_& m);   // bind_config.cpp: EngineConfig, BatchConfig, batchability
void bind_engine(py::module_& m);   // bind_engine.cpp: the engine class
void bind_devices(py::module_& m);  // bind_devices.cpp: plugin EP libraries, EP devices
void bind_bound(py::module_& m);    // bind_bound.cpp: BoundCall (Engine.bind)

// ---------------------------------------------------------------- errors ----
// The Python exception (an instance, not raised) for a failed request.
py::object exception_object(std::exception_ptr p);

// A reference to a Python object that may be dropped on a thread without the GIL.
class GilRef {
 public:
  explicit GilRef(py::object obj) : obj_(obj.release().ptr()) {}
  GilRef(const GilRef&) = delete;
  GilRef& operator=(const GilRef&) = delete;
  ~GilRef();
  py::object get() const { return py::reinterpret_borrow<py::object>(obj_); }

 private:
  PyObject* obj_;
};

// ---------------------------------------------------------------- arrays ----
// The numpy dtype of an element type; None where numpy (and ml_dtypes) has none.
py::object dtype_of(ElementType type);
// The element type of a numpy dtype; UNDEFINED when onnxruntime has none.
ElementType type_of(const py::dtype& dt);
// Whether outputs of `type` can be allocated as numpy arrays up front.
bool numpy_allocatable(ElementType type);
// A new C-contiguous numpy array of `dtype` (a numpy.dtype) with `ndim` dims,
// made by numpy from the dims as they are: nothing else is allocated, for the
// per-call paths (Engine.run's guessed outputs, the bound call's copies).
py::array new_array(py::handle dtype, size_t ndim, const int64_t* dims);

std::string type_name(py::handle obj);
// str(obj) as UTF-8 for messages; never throws.
std::string text_of(py::handle obj);

// Keeps what a TensorView points into alive for the length of a run.
struct Held {
  py::object array;
  std::shared_ptr<dlpack::ManagedTensor> dl;  // a consumed DLPack tensor, released with its deleter
  std::vector<std::string> utf8;  // string tensors: the encoded elements
  std::vector<std::string_view> views;
  // A sequence, map or optional input's value (bind_values.cpp); a pointer, so
  // that the Held of a tensor input costs no onnxruntime call when it goes.
  std::unique_ptr<Ort::Value> value;
};

// A numpy array (or numpy scalar, or another library's tensor) as a view over
// its memory; `expected` lets a string array meant for a non-string tensor fail
// early; `budget` is charged before anything is copied. Messages name it
// "<kind> '<name>'", or `kind` alone when `name` is empty.
TensorView view_of_array(py::handle obj, const char* kind, const std::string& name, Held& held,
                         ElementType expected = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED,
                         RequestBudget* budget = nullptr);
// An input declared as a sequence, map or optional (bind_values.cpp): a
// list/tuple of arrays, a dict, or None / the value, as a view whose `value`
// (owned by `held`, or the process's for empty sequences) onnxruntime is fed;
// None for an optional as an absent view. Each part is checked against the
// declared type; errors name the input and the element at fault.
TensorView view_of_value(py::handle obj, const IOInfo& io, Held& held, RequestBudget* budget);
// view_of_array or view_of_value, as input `io` is declared.
inline TensorView view_of_input(py::handle obj, const IOInfo& io, Held& held, RequestBudget* budget) {
  if (io.kind == ValueKind::Tensor) return view_of_array(obj, "input", io.name, held, io.type, budget);
  return view_of_value(obj, io, held, budget);
}
// The same for objects of other libraries (DLPack, __cuda_array_interface__): bind_dlpack.cpp.
TensorView view_of_device_object(py::handle obj, const char* kind, const std::string& name, Held& held,
                                 ElementType expected);
// Python's message of the exception being handled, as an InvalidInputError.
[[noreturn]] void rethrow_as_invalid(py::error_already_set& e, const std::string& what);

// Output values as Python objects: numpy arrays over onnxruntime's buffers
// (kept alive by `owner`), object arrays of str, lists, dicts.
py::object numpy_view(const TensorView& view, const std::vector<int64_t>* byte_strides, std::shared_ptr<void> owner);
py::object to_python(Ort::Value& value, const std::shared_ptr<void>& owner);
py::object owned_to_python(Ort::Value&& value);
py::object slice_to_python(OutputSlice& slice);

// -------------------------------------------------------------- requests ----
// bind_requests.cpp. "a, b" for messages ("none" when empty).
std::string names_of(const std::vector<IOInfo>& ios);
// A request's inputs (dict, list/tuple or one array) as one view per model
// input, charging `max_request_bytes` (0: physical memory) before any copy.
void parse_inputs(const Session& model, const std::vector<py::str>& input_names, size_t max_request_bytes,
                  py::handle inputs, std::vector<Held>& held, std::vector<TensorView>& views);
// The indices of the outputs named (all for None).
std::vector<size_t> select_outputs(const Session& model, py::handle outputs);
// out= buffers: one view per selected output (empty for None); `out_arrays` keeps them.
std::vector<TensorView> parse_out(const Session& model, py::handle out, const std::vector<size_t>& selected,
                                  std::vector<py::object>& out_arrays);

// ----------------------------------------------------------------- bound ----
// bind_bound.cpp: Engine.bind()'s callable over the outputs `selected`.
py::object make_bound_call(std::shared_ptr<Engine> core, std::vector<size_t> selected, bool copy);

// ---------------------------------------------------------------- tensor ----
// A tensor output as a fastort.Tensor left where onnxruntime put it; other
// values as to_python gives them.
py::object owned_to_tensor(Ort::Value&& value);

}  // namespace bind
}  // namespace fastort
