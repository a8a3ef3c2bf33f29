// fastort.Tensor: an output left where onnxruntime put it (host or device
// memory), exported with DLPack and __cuda_array_interface__ without a copy.
#include "bind.h"

#include "fastort/device.h"
#include "fastort/errors.h"

namespace fastort {
namespace bind {
namespace {

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
    py::object dt = dtype_of(view.type);
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
    d["typestr"] = dtype_of(view.type).attr("str");
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


}  // namespace

// A tensor output as a PyTensor; other values (strings, sequences, maps) as run() gives them.
py::object owned_to_tensor(Ort::Value&& value) {
  auto owner = std::make_shared<Ort::Value>(std::move(value));
  if (!owner->HasValue() || !owner->IsTensor()) return to_python(*owner, owner);
  TensorView view = view_of(*owner);
  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING || element_size(view.type) == 0) return to_python(*owner, owner);
  view.device = device_of(owner->GetConst());
  return py::cast(PyTensor{owner, std::move(view)});
}

void bind_tensor(py::module_& m) {
  py::class_<PyTensor>(m, "Tensor", "A tensor output left in onnxruntime's buffer (host or CUDA memory)")
      .def_property_readonly("shape", &PyTensor::shape)
      .def_property_readonly("dtype", [](const PyTensor& t) { return dtype_of(t.view.type); })
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
}

}  // namespace bind
}  // namespace fastort
