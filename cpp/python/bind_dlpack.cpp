// Inputs from other libraries: DLPack producers (torch, CuPy, JAX, numpy's
// __dlpack__...) and __cuda_array_interface__ objects (Numba...).
#include "bind.h"

#include "fastort/device.h"
#include "fastort/errors.h"

namespace fastort {
namespace bind {

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
    view.type = type_of(dt);
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

}  // namespace bind
}  // namespace fastort
