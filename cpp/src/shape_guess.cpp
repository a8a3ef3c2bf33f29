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

bool ShapeGuesser::lookup(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                          std::vector<std::vector<int64_t>>& shapes) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (disabled() || outputs_ != outputs || key_ != key_of(inputs)) return false;
  shapes = shapes_;
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
