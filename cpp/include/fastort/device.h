// Device tensors: DLPack import/export and the few CUDA runtime calls fastort
// makes. No CUDA toolkit is needed to build: the CUDA runtime library is looked
// up at run time among the libraries already loaded (onnxruntime's CUDA
// provider loads it), and every call fails with a clear Error without it.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <memory>
#include <string>
#include <vector>

#include "fastort/dlpack_abi.h"
#include "fastort/tensor.h"

namespace fastort {

// Where an onnxruntime tensor value lives.
Device device_of(const Ort::ConstValue& value);

// A view over a DLPack tensor's memory (no copy). Throws InvalidInputError,
// naming `what`, for layouts onnxruntime cannot take as they are: strided
// (non C-contiguous) tensors, vector lanes, unknown dtypes, devices other than
// CPU and CUDA.
TensorView view_of_dlpack(const dlpack::Tensor& t, const std::string& what);

// The DLPack dtype of an element type; throws InvalidInputError for strings and
// types DLPack has no code for.
dlpack::DataType dlpack_type_of(ElementType type);

// Exports `view` (C-contiguous, on `view.device`) as a DLPack managed tensor that
// keeps `owner` alive until the consumer calls its deleter.
dlpack::ManagedTensor* export_dlpack(const TensorView& view, std::shared_ptr<void> owner);

// The CUDA runtime calls fastort makes, when libcudart is loaded in the process.
namespace cuda {
// Why the CUDA runtime cannot be used ("" when it can).
std::string unavailable_reason();
// Copies `bytes` from device memory to host memory (cudaMemcpy). Throws Error.
void copy_to_host(void* dst, const void* src, size_t bytes);
// The device of a CUDA pointer, or -1 when it cannot be told.
int device_of_pointer(const void* ptr) noexcept;
// A stream of fastort's own on `device` (created once, never destroyed), on
// which producers of CUDA inputs order their pending work (DLPack's `stream`
// argument); nullptr when the CUDA runtime is not loaded or it cannot be made.
void* input_stream(int device) noexcept;
// Waits (on the host) until the work queued on `stream` so far is done: one
// stream, never the whole device. Throws RunError on a CUDA error.
void synchronize(void* stream);
}  // namespace cuda

}  // namespace fastort
