#include "fastort/values.h"

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <utility>

#include "fastort/errors.h"
#include "fastort/runtime.h"

namespace fastort {
namespace {

// --------------------------------------------- a one-node model, by hand ----
// Protocol buffers' wire format, just enough for the ModelProto below.
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void put_varint(std::string& out, uint32_t field, uint64_t v) {
  varint(out, field << 3);
  varint(out, v);
}
void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  varint(out, (field << 3) | 2);
  varint(out, bytes.size());
  out += bytes;
}

// An ONNX model (IR 8, opset 17) with no inputs and one node,
// SequenceEmpty(dtype=element) -> s : seq(tensor(element)). Field numbers are onnx.proto's.
std::string empty_sequence_model(ElementType element) {
  const auto dtype = static_cast<uint64_t>(element);  // ONNXTensorElementDataType == TensorProto.DataType
  std::string tensor, elem, seq, type, output, attr, node, graph, opset, model;
  put_varint(tensor, 1, dtype);        // TypeProto.Tensor.elem_type
  put_bytes(elem, 1, tensor);          // TypeProto.tensor_type
  put_bytes(seq, 1, elem);             // TypeProto.Sequence.elem_type
  put_bytes(type, 4, seq);             // TypeProto.sequence_type
  put_bytes(output, 1, "s");           // ValueInfoProto.name
  put_bytes(output, 2, type);          // ValueInfoProto.type
  put_bytes(attr, 1, "dtype");         // AttributeProto.name
  put_varint(attr, 3, dtype);          // AttributeProto.i
  put_varint(attr, 20, 2);             // AttributeProto.type = INT
  put_bytes(node, 2, "s");             // NodeProto.output
  put_bytes(node, 4, "SequenceEmpty"); // NodeProto.op_type
  put_bytes(node, 5, attr);            // NodeProto.attribute
  put_bytes(graph, 1, node);           // GraphProto.node
  put_bytes(graph, 2, "fastort_empty_sequence");
  put_bytes(graph, 12, output);        // GraphProto.output
  put_bytes(opset, 1, "");             // OperatorSetIdProto.domain
  put_varint(opset, 2, 17);            // OperatorSetIdProto.version
  put_varint(model, 1, 8);             // ModelProto.ir_version
  put_bytes(model, 7, graph);          // ModelProto.graph
  put_bytes(model, 8, opset);          // ModelProto.opset_import
  return model;
}

// Empty sequences by element type, each with the session that made it.
struct EmptySequences {
  struct Made {
    Ort::Session session{nullptr};
    Ort::Value value{nullptr};
  };
  std::mutex mu;
  std::map<int, Made> made;
};

Ort::Value create_value(const std::vector<const OrtValue*>& parts, ONNXType type, const std::string& what) {
  OrtValue* out = nullptr;
  OrtStatus* status = Ort::GetApi().CreateValue(parts.data(), parts.size(), type, &out);
  if (status != nullptr) {
    const std::string msg = Ort::GetApi().GetErrorMessage(status);
    Ort::GetApi().ReleaseStatus(status);
    throw InvalidInputError(what + ": onnxruntime cannot make this value: " + msg);
  }
  return Ort::Value(out);
}

}  // namespace

Ort::Value host_tensor(const TensorView& view, const std::string& what) {
  if (!view.is_tensor()) throw InvalidInputError(what + ": expected a tensor");
  if (!view.device.is_cpu()) throw InvalidInputError(what + " is on " + view.device.str() + ": pass host memory");
  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
    const size_t count = checked_element_count(view.shape, sizeof(std::string_view), what);
    if (count != 0 && view.strings == nullptr) throw InvalidInputError(what + ": no strings");
    return string_tensor(view, count);
  }
  const size_t item = element_size(view.type);
  if (item == 0) throw InvalidInputError(what + ": element type " + element_type_name(view.type) + " is not supported");
  const size_t bytes = checked_element_count(view.shape, item, what) * item;
  static char empty_buffer[16];  // onnxruntime refuses a null buffer, even for 0 elements
  void* data = view.data != nullptr ? view.data : (bytes == 0 ? empty_buffer : nullptr);
  if (data == nullptr) throw InvalidInputError(what + ": no data buffer");
  return Ort::Value::CreateTensor(Runtime::get().cpu_memory(), data, bytes, view.shape.data(), view.shape.size(),
                                  view.type);
}

const OrtValue* empty_sequence(ElementType element, const std::string& what) {
  static auto* cache = std::make_unique<EmptySequences>().release();  // lives as long as the process
  std::lock_guard<std::mutex> lock(cache->mu);
  auto it = cache->made.find(static_cast<int>(element));
  if (it != cache->made.end()) return it->second.value;
  const std::string model = empty_sequence_model(element);
  try {
    EmptySequences::Made made;
    Ort::SessionOptions so;
    so.SetIntraOpNumThreads(1);
    so.SetInterOpNumThreads(1);
    so.SetLogSeverityLevel(ORT_LOGGING_LEVEL_ERROR);
    made.session = Ort::Session(Runtime::get().env(), model.data(), model.size(), so);
    const char* name = "s";
    std::vector<Ort::Value> out = made.session.Run(Ort::RunOptions{nullptr}, nullptr, nullptr, 0, &name, 1);
    made.value = std::move(out.at(0));
    const OrtValue* value = made.value;
    cache->made.emplace(static_cast<int>(element), std::move(made));
    return value;
  } catch (const Ort::Exception& e) {
    throw InvalidInputError(what + ": onnxruntime cannot make an empty sequence of " + element_type_name(element) +
                            " tensors (its SequenceEmpty operator refused: " + e.what() + ")");
  }
}

Ort::Value make_sequence(const std::vector<Ort::Value>& elements, ElementType element, const std::string& what) {
  if (elements.empty())
    throw InvalidInputError(what + ": an empty sequence comes from empty_sequence() (CreateValue needs one value)");
  std::vector<const OrtValue*> parts;
  parts.reserve(elements.size());
  for (size_t i = 0; i < elements.size(); ++i) {
    const Ort::Value& e = elements[i];
    if (!e.IsTensor()) throw InvalidInputError(what + ": element " + std::to_string(i) + " is not a tensor");
    const ElementType got = e.GetTensorTypeAndShapeInfo().GetElementType();
    if (got != element)
      throw InvalidInputError(what + ": element " + std::to_string(i) + ": expected " + element_type_name(element) +
                              ", got " + element_type_name(got));
    parts.push_back(e);
  }
  return create_value(parts, ONNX_TYPE_SEQUENCE, what);
}

Ort::Value make_sequence_of_maps(const std::vector<Ort::Value>& maps, const std::string& what) {
  if (maps.empty())
    throw InvalidInputError(what + ": onnxruntime's C API cannot make an empty sequence of maps "
                                   "(CreateValue needs at least one value)");
  std::vector<const OrtValue*> parts;
  parts.reserve(maps.size());
  for (const Ort::Value& m : maps) parts.push_back(m);
  return create_value(parts, ONNX_TYPE_SEQUENCE, what);
}

bool map_supported(ElementType key, ElementType value) noexcept {
  const bool k = key == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 || key == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
  const bool v = value == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 || value == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
                 value == ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE || value == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
  return k && v;
}

Ort::Value make_map(const TensorView& keys, const TensorView& values, const std::string& what) {
  if (!map_supported(keys.type, values.type))
    throw InvalidInputError(what + ": onnxruntime's maps take int64 or string keys and int64, float32, float64 or "
                                   "string values, not " + element_type_name(keys.type) + " -> " +
                                   element_type_name(values.type));
  if (keys.shape.size() != 1 || values.shape.size() != 1 || keys.shape[0] != values.shape[0])
    throw InvalidInputError(what + ": keys and values must be 1-D tensors of as many elements, got shapes " +
                            shape_to_string(keys.shape) + " and " + shape_to_string(values.shape));
  Ort::Value k = host_tensor(keys, what + " (keys)");
  Ort::Value v = host_tensor(values, what + " (values)");
  return create_value({k, v}, ONNX_TYPE_MAP, what);
}

void check_prepared(const IOInfo& io, const TensorView& view) {
  const std::string label = "input '" + io.name + "'";
  if (io.kind == ValueKind::Tensor || !io.value_type)
    throw InvalidInputError(label + " is a " + io.type_string + ": pass an array");
  if (view.absent) {
    if (io.kind != ValueKind::Optional)
      throw InvalidInputError(label + " is a " + io.type_string + ", which is not optional: it needs a value");
    return;
  }
  if (view.value == nullptr) throw InvalidInputError(label + ": no value");
  const ValueType& expected = io.kind == ValueKind::Optional ? *io.value_type->inner : *io.value_type;
  const std::string got = type_string(Ort::ConstValue(view.value).GetTypeInfo().GetConst());
  if (got != expected.type_string)
    throw InvalidInputError(label + ": expected a " + expected.type_string + ", got a " + got);
}

}  // namespace fastort
