#include "fastort/device.h"

#include <dlfcn.h>

#include <mutex>
#include <vector>

#include "fastort/errors.h"

namespace fastort {

Device device_of(const Ort::ConstValue& value) {
  auto info = value.GetTensorMemoryInfo();
  if (info.GetDeviceType() == OrtMemoryInfoDeviceType_GPU) return Device{DeviceType::Cuda, info.GetDeviceId()};
  return Device{};
}

namespace {

ElementType element_type_of(const dlpack::DataType& t) {
  switch (t.code) {
    case dlpack::kBool:
      return t.bits == 8 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    case dlpack::kInt:
      return t.bits == 8    ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8
             : t.bits == 16 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16
             : t.bits == 32 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32
             : t.bits == 64 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64
                            : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    case dlpack::kUInt:
      return t.bits == 8    ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8
             : t.bits == 16 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16
             : t.bits == 32 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32
             : t.bits == 64 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64
                            : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    case dlpack::kFloat:
      return t.bits == 16   ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16
             : t.bits == 32 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
             : t.bits == 64 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE
                            : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    case dlpack::kBfloat:
      return t.bits == 16 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    case dlpack::kComplex:
      return t.bits == 64    ? ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64
             : t.bits == 128 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128
                             : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    default:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
}

std::string device_type_name(int32_t type) {
  switch (type) {
    case dlpack::kCPU: return "cpu";
    case dlpack::kCUDA: return "cuda";
    case dlpack::kCUDAHost: return "cuda_host (pinned)";
    case dlpack::kROCM: return "rocm";
    case dlpack::kCUDAManaged: return "cuda_managed";
    default: return "DLPack device type " + std::to_string(type);
  }
}

// What a DLPack export owns: the shape array the tensor points into and the owner.
struct Export {
  dlpack::ManagedTensor managed{};
  std::vector<int64_t> shape;
  std::shared_ptr<void> owner;
};

void delete_export(dlpack::ManagedTensor* self) noexcept {
  std::unique_ptr<Export> e(static_cast<Export*>(self->manager_ctx));
}

}  // namespace

TensorView view_of_dlpack(const dlpack::Tensor& t, const std::string& what) {
  TensorView view;
  if (t.device.device_type == dlpack::kCUDA) {
    view.device = Device{DeviceType::Cuda, t.device.device_id};
  } else if (t.device.device_type != dlpack::kCPU && t.device.device_type != dlpack::kCUDAHost) {
    throw InvalidInputError(what + " is on a " + device_type_name(t.device.device_type) + ":" +
                            std::to_string(t.device.device_id) +
                            " device; fastort takes host (CPU) and CUDA tensors");
  }
  if (t.dtype.lanes != 1)
    throw InvalidInputError(what + ": vector dtypes (DLPack lanes " + std::to_string(t.dtype.lanes) + ") are not supported");
  view.type = element_type_of(t.dtype);
  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED)
    throw InvalidInputError(what + ": DLPack dtype (code " + std::to_string(t.dtype.code) + ", " +
                            std::to_string(t.dtype.bits) + " bits) is not supported");
  if (t.ndim < 0) throw InvalidInputError(what + ": negative rank");
  view.shape.assign(t.shape, t.shape + t.ndim);
  if (t.strides != nullptr) {
    int64_t expected = 1;
    for (int32_t d = t.ndim; d-- > 0;) {
      if (view.shape[d] != 1 && t.strides[d] != expected) {
        std::vector<int64_t> strides(t.strides, t.strides + t.ndim);
        throw InvalidInputError(what + " (shape " + shape_to_string(view.shape) + ", strides " +
                                shape_to_string(strides) + " elements) is not C-contiguous: onnxruntime reads "
                                "dense row-major buffers; make it contiguous first (e.g. .contiguous())");
      }
      expected *= view.shape[d];
    }
  }
  view.data = static_cast<char*>(t.data) + t.byte_offset;
  return view;
}

dlpack::DataType dlpack_type_of(ElementType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return {dlpack::kBool, 8, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return {dlpack::kInt, 8, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return {dlpack::kInt, 16, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return {dlpack::kInt, 32, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return {dlpack::kInt, 64, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return {dlpack::kUInt, 8, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return {dlpack::kUInt, 16, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: return {dlpack::kUInt, 32, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64: return {dlpack::kUInt, 64, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return {dlpack::kFloat, 16, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return {dlpack::kFloat, 32, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return {dlpack::kFloat, 64, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return {dlpack::kBfloat, 16, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64: return {dlpack::kComplex, 64, 1};
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128: return {dlpack::kComplex, 128, 1};
    default:
      throw InvalidInputError(std::string("a ") + element_type_name(type) + " tensor cannot be exported with DLPack");
  }
}

dlpack::ManagedTensor* export_dlpack(const TensorView& view, std::shared_ptr<void> owner) {
  auto e = std::make_unique<Export>();
  e->shape = view.shape;
  e->owner = std::move(owner);
  dlpack::Tensor& t = e->managed.dl_tensor;
  t.dtype = dlpack_type_of(view.type);
  t.data = view.data;
  t.device = view.device.is_cpu() ? dlpack::Device{dlpack::kCPU, 0} : dlpack::Device{dlpack::kCUDA, view.device.id};
  t.ndim = static_cast<int32_t>(e->shape.size());
  t.shape = e->shape.data();
  t.strides = nullptr;  // C-contiguous
  t.byte_offset = 0;
  e->managed.manager_ctx = e.get();
  e->managed.deleter = &delete_export;
  return &e.release()->managed;
}

namespace cuda {
namespace {

struct PointerAttributes {  // cudaPointerAttributes (CUDA 10 and later)
  int type;
  int device;
  void* device_pointer;
  void* host_pointer;
};

struct Api {
  using Memcpy = int (*)(void*, const void*, size_t, int);
  using GetAttributes = int (*)(PointerAttributes*, const void*);
  using ErrorString = const char* (*)(int);
  using StreamCreate = int (*)(void**, unsigned int);
  using StreamSync = int (*)(void*);
  using GetDevice = int (*)(int*);
  using SetDevice = int (*)(int);
  StreamCreate stream_create = nullptr;
  StreamSync stream_sync = nullptr;
  GetDevice get_device = nullptr;
  SetDevice set_device = nullptr;
  Memcpy memcpy = nullptr;
  GetAttributes attributes = nullptr;
  ErrorString error_string = nullptr;
  std::string why_not;
};

const Api& api() {
  static const Api loaded = [] {
    Api a;
    // Only a runtime already in the process (loaded by onnxruntime's CUDA
    // provider) is used: loading another one could mismatch the provider's.
    for (const char* name : {"libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"}) {
      void* h = dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
      if (h == nullptr) continue;
      a.memcpy = reinterpret_cast<Api::Memcpy>(dlsym(h, "cudaMemcpy"));
      a.attributes = reinterpret_cast<Api::GetAttributes>(dlsym(h, "cudaPointerGetAttributes"));
      a.error_string = reinterpret_cast<Api::ErrorString>(dlsym(h, "cudaGetErrorString"));
      a.stream_create = reinterpret_cast<Api::StreamCreate>(dlsym(h, "cudaStreamCreateWithFlags"));
      a.stream_sync = reinterpret_cast<Api::StreamSync>(dlsym(h, "cudaStreamSynchronize"));
      a.get_device = reinterpret_cast<Api::GetDevice>(dlsym(h, "cudaGetDevice"));
      a.set_device = reinterpret_cast<Api::SetDevice>(dlsym(h, "cudaSetDevice"));
      if (a.memcpy != nullptr && a.attributes != nullptr && a.error_string != nullptr) return a;
      a = Api{};
    }
    a.why_not = "the CUDA runtime (libcudart) is not loaded in this process (no CUDA engine was opened)";
    return a;
  }();
  return loaded;
}

}  // namespace

std::string unavailable_reason() { return api().why_not; }

void copy_to_host(void* dst, const void* src, size_t bytes) {
  const Api& a = api();
  if (a.memcpy == nullptr) throw Error("cannot copy a CUDA tensor to the host: " + a.why_not);
  if (bytes == 0) return;
  const int rc = a.memcpy(dst, src, bytes, 2 /* cudaMemcpyDeviceToHost */);
  if (rc != 0) throw RunError(std::string("cudaMemcpy (device to host) failed: ") + a.error_string(rc));
}

void* input_stream(int device) noexcept {
  const Api& a = api();
  if (a.stream_create == nullptr || a.stream_sync == nullptr || a.get_device == nullptr || a.set_device == nullptr ||
      device < 0)
    return nullptr;
  static std::mutex mu;
  static std::vector<void*> streams;  // per device; live as long as the process
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<size_t>(device) < streams.size() && streams[device] != nullptr) return streams[device];
  int current = 0;
  if (a.get_device(&current) != 0) return nullptr;
  void* stream = nullptr;
  if (a.set_device(device) == 0 && a.stream_create(&stream, 1 /* cudaStreamNonBlocking */) != 0) stream = nullptr;
  a.set_device(current);
  if (stream == nullptr) return nullptr;
  if (streams.size() <= static_cast<size_t>(device)) streams.resize(device + 1, nullptr);
  streams[device] = stream;
  return stream;
}

void synchronize(void* stream) {
  const Api& a = api();
  if (a.stream_sync == nullptr) throw Error("cannot wait for a CUDA stream: " + a.why_not);
  const int rc = a.stream_sync(stream);
  if (rc != 0) throw RunError(std::string("cudaStreamSynchronize failed: ") + a.error_string(rc));
}

int device_of_pointer(const void* ptr) noexcept {
  const Api& a = api();
  if (a.attributes == nullptr) return -1;
  PointerAttributes attrs{};
  if (a.attributes(&attrs, ptr) != 0) return -1;
  return attrs.type == 2 || attrs.type == 3 ? attrs.device : -1;  // device or managed memory
}

}  // namespace cuda
}  // namespace fastort
