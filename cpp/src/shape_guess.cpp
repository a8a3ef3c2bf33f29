#include "fastort/shape_guess.h"

namespace fastort {

std::vector<int64_t> ShapeGuesser::key_of(const std::vector<TensorView>& inputs) {
  std::vector<int64_t> key;
  for (const auto& v : inputs) {
    key.push_back(static_cast<int64_t>(v.shape.size()));
    key.insert(key.end(), v.shape.begin(), v.shape.end());
  }
  return key;
}

bool ShapeGuesser::same_key(const std::vector<TensorView>& inputs) const noexcept {
  size_t j = 0;
  for (const auto& v : inputs) {
    if (j >= key_.size() || key_[j++] != static_cast<int64_t>(v.shape.size())) return false;
    for (int64_t d : v.shape)
      if (j >= key_.size() || key_[j++] != d) return false;
  }
  return j == key_.size();
}

bool ShapeGuesser::lookup(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                          std::vector<TensorView>& out) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (disabled() || key_.empty() || outputs_ != outputs || !same_key(inputs)) return false;
  out.resize(shapes_.size());
  for (size_t k = 0; k < shapes_.size(); ++k) out[k].shape = shapes_[k];
  return true;
}

void ShapeGuesser::miss() {
  std::lock_guard<std::mutex> lock(mu_);
  key_.clear();
  if (++misses_ >= kMaxMisses) disabled_ = true;
}

void ShapeGuesser::remember(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                            std::vector<Ort::Value>& results, bool (*allocatable)(ElementType)) {
  if (disabled()) return;
  std::vector<std::vector<int64_t>> shapes;
  for (auto& v : results) {
    if (!v.IsTensor()) return;
    TensorView t = view_of(v);
    const size_t item = element_size(t.type);
    if (item == 0 || !allocatable(t.type)) return;
    size_t bytes = item;
    for (int64_t d : t.shape) bytes *= static_cast<size_t>(d);
    if (bytes > kMaxBytes || bytes == 0) return;
    shapes.push_back(std::move(t.shape));
  }
  std::lock_guard<std::mutex> lock(mu_);
  key_ = key_of(inputs);
  outputs_ = outputs;
  shapes_ = std::move(shapes);
}

}  // namespace fastort
