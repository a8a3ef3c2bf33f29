#include "fastort/tensor.h"

#include <cstring>
#include <limits>

#include "fastort/errors.h"
#include "fastort/runtime.h"

namespace fastort {

size_t element_size(ElementType type) noexcept {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FNUZ:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2FNUZ:
      return 1;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64:
      return 8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128:
      return 16;
    default:
      return 0;
  }
}

const char* element_type_name(ElementType type) noexcept {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return "uint16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: return "uint32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64: return "uint64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64: return "complex64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128: return "complex128";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN: return "float8_e4m3fn";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FNUZ: return "float8_e4m3fnuz";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2: return "float8_e5m2";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2FNUZ: return "float8_e5m2fnuz";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT4: return "uint4";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT4: return "int4";
    default: return "undefined";
  }
}

namespace {

// ONNX's own spelling inside "tensor(...)".
const char* onnx_type_name(ElementType type) noexcept {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "double";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN: return "float8e4m3fn";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FNUZ: return "float8e4m3fnuz";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2: return "float8e5m2";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2FNUZ: return "float8e5m2fnuz";
    default: return element_type_name(type);
  }
}

}  // namespace

size_t checked_element_count(const std::vector<int64_t>& shape, size_t item_size,
                             const std::string& what) {
  const size_t limit = static_cast<size_t>(std::numeric_limits<int64_t>::max()) /
                       (item_size == 0 ? 1 : item_size);
  size_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) throw InvalidInputError(what + ": negative dim in shape " + shape_to_string(shape));
    if (d != 0 && count > limit / static_cast<size_t>(d)) {
      throw RequestTooLargeError(what + ": shape " + shape_to_string(shape) +
                                 " is too large (its byte size overflows)");
    }
    count *= static_cast<size_t>(d);
  }
  return count;
}

std::string Device::str() const {
  if (type == DeviceType::Cpu) return "cpu";
  return id < 0 ? std::string("cuda") : "cuda:" + std::to_string(id);
}

bool is_valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p++;
    if (c < 0x80) continue;
    int more;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) { more = 1; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { more = 2; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { more = 3; cp = c & 0x07; }
    else return false;
    if (end - p < more) return false;
    for (int i = 0; i < more; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    p += more;
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[more] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
  }
  return true;
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

std::string IOInfo::shape_string() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    if (shape[i] >= 0) s += std::to_string(shape[i]);
    else if (!dim_names[i].empty()) s += dim_names[i];
    else s += "?";
  }
  return s + "]";
}

namespace {

std::string type_string_of(const Ort::ConstTypeInfo& info) {
  switch (info.GetONNXType()) {
    case ONNX_TYPE_TENSOR:
      return std::string("tensor(") + onnx_type_name(info.GetTensorTypeAndShapeInfo().GetElementType()) + ")";
    case ONNX_TYPE_SEQUENCE: {
      auto elem = info.GetSequenceTypeInfo().GetSequenceElementType();
      return "seq(" + type_string_of(elem.GetConst()) + ")";
    }
    case ONNX_TYPE_MAP: {
      auto map = info.GetMapTypeInfo();
      auto value = map.GetMapValueType();
      return std::string("map(") + onnx_type_name(map.GetMapKeyType()) + "," +
             type_string_of(value.GetConst()) + ")";
    }
    case ONNX_TYPE_OPTIONAL: {
      auto elem = info.GetOptionalTypeInfo().GetOptionalElementType();
      return "optional(" + type_string_of(elem.GetConst()) + ")";
    }
    case ONNX_TYPE_SPARSETENSOR: return "sparse_tensor";
    case ONNX_TYPE_OPAQUE: return "opaque";
    default: return "unknown";
  }
}

}  // namespace

std::string type_string(const Ort::ConstTypeInfo& info) { return type_string_of(info); }

std::shared_ptr<const ValueType> value_type_of(const Ort::ConstTypeInfo& info) {
  auto t = std::make_shared<ValueType>();
  t->type_string = type_string_of(info);
  switch (info.GetONNXType()) {
    case ONNX_TYPE_TENSOR:
      t->kind = ValueKind::Tensor;
      t->element = info.GetTensorTypeAndShapeInfo().GetElementType();
      break;
    case ONNX_TYPE_SEQUENCE: {
      t->kind = ValueKind::Sequence;
      auto elem = info.GetSequenceTypeInfo().GetSequenceElementType();
      t->inner = value_type_of(elem.GetConst());
      break;
    }
    case ONNX_TYPE_MAP: {
      t->kind = ValueKind::Map;
      auto map = info.GetMapTypeInfo();
      t->element = map.GetMapKeyType();
      auto value = map.GetMapValueType();
      t->inner = value_type_of(value.GetConst());
      break;
    }
    case ONNX_TYPE_OPTIONAL: {
      t->kind = ValueKind::Optional;
      auto elem = info.GetOptionalTypeInfo().GetOptionalElementType();
      t->inner = value_type_of(elem.GetConst());
      break;
    }
    default: t->kind = ValueKind::Other; break;
  }
  return t;
}

IOInfo describe(const std::string& name, const Ort::ConstTypeInfo& info) {
  IOInfo io;
  io.name = name;
  io.value_type = value_type_of(info);
  io.type_string = io.value_type->type_string;
  switch (info.GetONNXType()) {
    case ONNX_TYPE_TENSOR: {
      io.kind = ValueKind::Tensor;
      auto t = info.GetTensorTypeAndShapeInfo();
      io.type = t.GetElementType();
      io.shape = t.GetShape();
      std::vector<const char*> names(io.shape.size(), nullptr);
      if (!names.empty()) t.GetSymbolicDimensions(names.data(), names.size());
      for (const char* n : names) io.dim_names.emplace_back(n ? n : "");
      // onnxruntime reports an unknown rank as rank 0: only a non-empty shape is known.
      io.has_shape = !io.shape.empty();
      break;
    }
    case ONNX_TYPE_SEQUENCE: io.kind = ValueKind::Sequence; break;
    case ONNX_TYPE_MAP: io.kind = ValueKind::Map; break;
    case ONNX_TYPE_OPTIONAL: io.kind = ValueKind::Optional; break;
    default: io.kind = ValueKind::Other; break;
  }
  return io;
}

TensorView view_of(Ort::Value& value) {
  auto info = value.GetTensorTypeAndShapeInfo();
  TensorView v;
  v.type = info.GetElementType();
  v.shape = info.GetShape();
  if (v.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) v.data = value.GetTensorMutableRawData();
  return v;
}

Ort::Value string_tensor(const TensorView& view, size_t count) {
  Ort::Value v = Ort::Value::CreateTensor(Runtime::get().allocator(), view.shape.data(), view.shape.size(), view.type);
  for (size_t i = 0; i < count; ++i) {
    const std::string_view& str = view.strings[i];
    char* dst = v.GetResizedStringTensorElementBuffer(i, str.size());
    if (!str.empty()) std::memcpy(dst, str.data(), str.size());
  }
  return v;
}

std::vector<std::string> string_contents(const Ort::Value& value) {
  const size_t count = value.GetTensorTypeAndShapeInfo().GetElementCount();
  std::vector<std::string> out(count);
  if (count == 0) return out;
  const size_t total = value.GetStringTensorDataLength();
  std::string buffer(total, '\0');
  std::vector<size_t> offsets(count);
  value.GetStringTensorContent(buffer.data(), total, offsets.data(), count);
  for (size_t i = 0; i < count; ++i) {
    const size_t end = (i + 1 < count) ? offsets[i + 1] : total;
    out[i].assign(buffer, offsets[i], end - offsets[i]);
  }
  return out;
}

std::vector<Ort::Value> elements_of(const Ort::Value& value) {
  OrtAllocator* alloc = Runtime::get().allocator();
  const size_t n = value.GetCount();
  std::vector<Ort::Value> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(value.GetValue(static_cast<int>(i), alloc));
  return out;
}

}  // namespace fastort
