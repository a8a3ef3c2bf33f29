// N onnxruntime sessions (replicas) of one model that share their prepacked weights.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "session.h"

namespace fastort {

// Where a model comes from: a file path, or serialized bytes (not owned).
struct ModelSource {
  std::string path;
  const void* data = nullptr;
  size_t size = 0;
  std::string label = "model bytes";
};

class SessionPool {
 public:
  // Opens `replicas` sessions. With share_weights, they share one onnxruntime
  // prepacked-weights container, so weights that onnxruntime prepacks (MatMul,
  // Gemm, Conv...) are held once, not once per replica.
  static std::shared_ptr<SessionPool> open(const ModelSource& source, const SessionOptions& options,
                                           size_t replicas, bool share_weights = true);

  size_t size() const noexcept { return sessions_.size(); }
  Session& replica(size_t i) const { return *sessions_.at(i); }
  const Session& front() const { return *sessions_.front(); }

  // Runs on the replica with the fewest runs in flight (unbatched path).
  std::vector<Ort::Value> run(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs = {},
                              const std::vector<TensorView>& out = {}) const;

  struct Key {
   private:
    Key() = default;
    friend class SessionPool;
  };
  explicit SessionPool(Key, size_t replicas);

 private:
  struct ContainerDeleter {
    void operator()(OrtPrepackedWeightsContainer* c) const noexcept;
  };
  // Declared before sessions_: it must outlive them.
  std::unique_ptr<OrtPrepackedWeightsContainer, ContainerDeleter> prepacked_;
  std::vector<std::shared_ptr<Session>> sessions_;
  std::unique_ptr<std::atomic<int>[]> in_flight_;
};

}  // namespace fastort
