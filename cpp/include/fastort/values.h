// onnxruntime values for inputs that are not tensors: sequences, maps and the
// contents of optionals, built from caller-owned tensors through onnxruntime's
// C API (CreateValue), and checked against the type a model declares. Plain
// C++: the Python binding (cpp/python/bind_values.cpp) walks Python lists and
// dicts and calls these.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <string>
#include <vector>

#include "fastort/tensor.h"

namespace fastort {

// A host tensor as an onnxruntime value over the view's memory (no copy;
// strings are copied into onnxruntime's string tensor). `what` names it in errors.
Ort::Value host_tensor(const TensorView& view, const std::string& what);

// A sequence of the tensors `elements` (each of element type `element`, the
// sequence's declared one), which onnxruntime copies. An empty sequence is
// made by onnxruntime itself (its SequenceEmpty operator, run once per element
// type, the result kept for the process): the C API's CreateValue refuses
// zero values. Throws InvalidInputError naming `what`.
Ort::Value make_sequence(const std::vector<Ort::Value>& elements, ElementType element, const std::string& what);
// A sequence of maps (seq(map(string|int64, tensor(float)))): onnxruntime's
// CreateValue takes these two only; at least one map.
Ort::Value make_sequence_of_maps(const std::vector<Ort::Value>& maps, const std::string& what);

// A map from a 1-D keys tensor (int64 or string) and a 1-D values tensor of as
// many elements (int64, float, double or string: what onnxruntime's maps hold),
// copied by onnxruntime. Throws InvalidInputError naming `what`.
Ort::Value make_map(const TensorView& keys, const TensorView& values, const std::string& what);

// The empty sequence of `element` tensors (see make_sequence); owned by the
// process, never released.
const OrtValue* empty_sequence(ElementType element, const std::string& what);

// Whether onnxruntime's CreateValue can hold a map of these key and value
// types, and a sequence of maps of this type.
bool map_supported(ElementType key, ElementType value) noexcept;

// Throws InvalidInputError unless `view` (a prepared value or an absent
// optional) fits the input `io`: an absent one only for optional inputs, a
// value whose type is the declared one (for optionals: the contained type).
void check_prepared(const IOInfo& io, const TensorView& view);

}  // namespace fastort
