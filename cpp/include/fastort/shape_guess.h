// Output-shape guessing for the unbatched run path. Small outputs of a call
// whose input shapes match the previous call's are allocated by the caller up
// front, in the shapes that call produced, and onnxruntime writes straight into
// them: one allocation instead of an onnxruntime buffer plus the object that
// hands it to the caller. A wrong guess (outputs that depend on input values)
// costs one more run; after a few, guessing stops for good.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "fastort/tensor.h"

namespace fastort {

class ShapeGuesser {
 public:
  static constexpr size_t kMaxBytes = 64 * 1024;  // larger outputs are never guessed
  static constexpr int kMaxMisses = 3;

  // The shapes the last remembered call with these input shapes and outputs
  // produced, as the shapes of `out` (one view per output; type and data are
  // left to the caller); false when there is no such guess.
  bool lookup(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
              std::vector<TensorView>& out) const;
  // A guess was wrong: forget it; after kMaxMisses, stop guessing.
  void miss();
  // Remembers the output shapes of a call when every result is a non-empty
  // tensor of at most kMaxBytes whose element type `allocatable` accepts.
  void remember(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                std::vector<Ort::Value>& results, bool (*allocatable)(ElementType));
  bool disabled() const noexcept { return disabled_.load(std::memory_order_relaxed); }

 private:
  static std::vector<int64_t> key_of(const std::vector<TensorView>& inputs);
  bool same_key(const std::vector<TensorView>& inputs) const noexcept;  // under mu_; allocates nothing

  mutable std::mutex mu_;
  std::vector<int64_t> key_;  // the inputs' ranks and dims
  std::vector<size_t> outputs_;
  std::vector<std::vector<int64_t>> shapes_;
  int misses_ = 0;
  std::atomic<bool> disabled_{false};  // also read without the lock
};

}  // namespace fastort
