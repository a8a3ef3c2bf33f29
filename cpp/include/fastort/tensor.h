// Element types, non-owning tensor views and helpers to read onnxruntime values.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
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

// One model input as the core takes it: a tensor the caller owns (a typed
// buffer, or for strings one UTF-8 string per element; typed buffers are handed
// to onnxruntime as they are, never copied), or, for an input declared as a
// sequence, map or optional, a value prepared with values.h (`value`), or an
// optional input left out (`absent`). The tensor fields are unused for those two.
struct TensorView {
  ElementType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  void* data = nullptr;                         // element buffer, C-contiguous
  const std::string_view* strings = nullptr;    // string tensors: one view per element
  std::vector<int64_t> shape;
  Device device;                                // host memory unless said otherwise
  // A prepared onnxruntime value (not owned: the caller keeps it alive for the
  // run; onnxruntime only reads inputs, so one value may feed several runs).
  const OrtValue* value = nullptr;
  // An optional input given as "none": left out of the run's feeds, which
  // onnxruntime takes as an empty optional.
  bool absent = false;

  bool is_tensor() const noexcept { return value == nullptr && !absent; }
};

// What kind of value an input or output is.
enum class ValueKind { Tensor, Sequence, Map, Optional, Other };

// A declared type, nested: "seq(tensor(float))" is a Sequence whose `inner` is
// a Tensor of FLOAT; "map(int64,tensor(float))" a Map of key INT64 whose
// `inner` is a Tensor of FLOAT; "optional(seq(...))" an Optional whose `inner`
// is the sequence.
struct ValueType {
  ValueKind kind = ValueKind::Other;
  ElementType element = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // tensors: element type; maps: key type
  std::shared_ptr<const ValueType> inner;  // sequence element, map value, optional's contents
  std::string type_string;                 // ONNX-style, as IOInfo::type_string
};

// One model input or output.
struct IOInfo {
  std::string name;
  ValueKind kind = ValueKind::Other;
  ElementType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // tensors only
  std::shared_ptr<const ValueType> value_type;  // the declared type, nested (never null after describe)
  bool has_shape = false;               // false when the model gives no rank
  std::vector<int64_t> shape;           // -1 for dims not fixed
  std::vector<std::string> dim_names;   // symbolic name per dim ("" when none)
  std::string type_string;              // ONNX-style: "tensor(float)", "seq(map(string,tensor(float)))"

  // "[batch, 3]" for messages.
  std::string shape_string() const;
};

// Describes an onnxruntime type (for IOInfo).
IOInfo describe(const std::string& name, const Ort::ConstTypeInfo& info);
std::shared_ptr<const ValueType> value_type_of(const Ort::ConstTypeInfo& info);
// ONNX-style type string of an onnxruntime type: "tensor(float)", "seq(tensor(int64))".
std::string type_string(const Ort::ConstTypeInfo& info);

// Type, data pointer and shape of a tensor value (no copy).
TensorView view_of(Ort::Value& value);

// A string tensor holding copies of `view`'s `count` strings (onnxruntime keeps
// its own std::strings: string tensors cannot be views).
Ort::Value string_tensor(const TensorView& view, size_t count);

// The contents of a string tensor, in element order (copies: strings are not contiguous).
std::vector<std::string> string_contents(const Ort::Value& value);

// The elements of a sequence (N values) or a map (keys tensor, values tensor).
std::vector<Ort::Value> elements_of(const Ort::Value& value);

}  // namespace fastort
