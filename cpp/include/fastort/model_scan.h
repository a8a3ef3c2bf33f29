// A bounded, allocation-light scan of a serialized ONNX model (protobuf wire
// format) for what onnxruntime's API does not tell: which graph inputs declare
// a shape of rank 0 (scalars). onnxruntime reports a scalar and an input of
// unknown rank alike (an empty shape), so without this a scalar input would
// accept any rank.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace fastort {

// Names of the graph inputs declared as tensors with a rank-0 shape. Never
// throws on malformed bytes: what cannot be parsed is skipped (onnxruntime
// then says what is wrong with the model).
std::vector<std::string> scalar_inputs_of(const void* data, size_t size) noexcept;

// Same for a model file (memory-mapped, read-only); empty when unreadable.
std::vector<std::string> scalar_inputs_of_file(const std::string& path) noexcept;

}  // namespace fastort
