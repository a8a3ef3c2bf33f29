// Element types, non-owning tensor views and helpers to read onnxruntime values.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fastort {

using ElementType = ONNXTensorElementDataType;

// Bytes per element; 0 for strings and types fastort cannot lay out (int4/uint4).
size_t element_size(ElementType type) noexcept;

// numpy-style name of an element type: "float32", "int64", "string", "bfloat16", ...
const char* element_type_name(ElementType type) noexcept;

// Number of elements of `shape`. Throws InvalidInputError (naming `what`) on a
// negative dim or when the count or its byte size would overflow.
size_t checked_element_count(const std::vector<int64_t>& shape, size_t item_size,
                             const std::string& what);

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool is_valid_utf8(std::string_view s) noexcept;

// "(2, 3)" / "()" for messages.
std::string shape_to_string(const std::vector<int64_t>& shape);

// Where a tensor's buffer lives. CUDA ids of -1 mean "not known: the engine's device"
// (a __cuda_array_interface__ producer names no device).
enum class DeviceType : int { Cpu = 0, Cuda = 1 };
struct Device {
  DeviceType type = DeviceType::Cpu;
  int id = 0;
  bool is_cpu() const noexcept { return type == DeviceType::Cpu; }
  bool operator==(const Device& o) const noexcept { return type == o.type && id == o.id; }
  bool operator!=(const Device& o) const noexcept { return !(*this == o); }
  std::string str() const;  // "cpu", "cuda:0"
};

// A tensor the caller owns: a typed buffer, or (for strings) one UTF-8 string
// per element. Typed buffers are handed to onnxruntime as they are, never copied.
struct TensorView {
  ElementType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  void* data = nullptr;                         // element buffer, C-contiguous
  const std::string_view* strings = nullptr;    // string tensors: one view per element
  std::vector<int64_t> shape;
  Device device;                                // host memory unless said otherwise
};

// What kind of value an input or output is.
enum class ValueKind { Tensor, Sequence, Map, Optional, Other };

// One model input or output.
struct IOInfo {
  std::string name;
  ValueKind kind = ValueKind::Other;
  ElementType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // tensors only
  bool has_shape = false;               // false when the model gives no rank
  std::vector<int64_t> shape;           // -1 for dims not fixed
  std::vector<std::string> dim_names;   // symbolic name per dim ("" when none)
  std::string type_string;              // ONNX-style: "tensor(float)", "seq(map(string,tensor(float)))"

  // "[batch, 3]" for messages.
  std::string shape_string() const;
};

// Describes an onnxruntime type (for IOInfo).
IOInfo describe(const std::string& name, const Ort::ConstTypeInfo& info);

// Type, data pointer and shape of a tensor value (no copy).
TensorView view_of(Ort::Value& value);

// The contents of a string tensor, in element order (copies: strings are not contiguous).
std::vector<std::string> string_contents(const Ort::Value& value);

// The elements of a sequence (N values) or a map (keys tensor, values tensor).
std::vector<Ort::Value> elements_of(const Ort::Value& value);

}  // namespace fastort
