// N onnxruntime sessions (replicas) of one model that share their prepacked weights.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "fastort/session.h"

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
  // Opens `replicas` sessions. `initializers` (name, tensor over caller memory
  // that `keepalive` owns) replace the model's own copies in every replica, so
  // weights are held once; with share_weights the replicas also share one
  // prepacked-weights container, so the packed forms onnxruntime makes of those
  // weights (MatMul, Gemm, Conv...) are held once too.
  static std::shared_ptr<SessionPool> open(const ModelSource& source, const SessionOptions& options,
                                           size_t replicas, bool share_weights = true,
                                           const std::vector<std::pair<std::string, TensorView>>& initializers = {},
                                           std::shared_ptr<void> keepalive = nullptr);

  size_t size() const noexcept { return sessions_.size(); }
  Session& replica(size_t i) const { return *sessions_.at(i); }
  const Session& front() const { return *sessions_.front(); }

  // Bounds on every request (see RequestLimits); set before the pool serves.
  void set_limits(const RequestLimits& limits) noexcept { limits_ = limits; }
  const RequestLimits& limits() const noexcept { return limits_; }
  // Throws RequestTooLargeError when `inputs` exceed the pool's limits.
  void check_limits(const std::vector<TensorView>& inputs) const {
    check_request_limits(inputs, front().inputs(), limits_);
  }

  // Runs on the replica with the fewest runs in flight (unbatched path), or on
  // `replica` when one is named: a run the request queue lent that replica
  // for, which the queue counts (it is left out of direct_stats). kQueueLeastBusy:
  // the least busy replica for a run the queue counts (its learned direct route).
  static constexpr size_t kLeastBusy = static_cast<size_t>(-1);
  static constexpr size_t kQueueLeastBusy = static_cast<size_t>(-2);
  std::vector<Ort::Value> run(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs = {},
                              const std::vector<TensorView>& out = {}, size_t replica = kLeastBusy) const;

  // Session::run_to_device on the least busy replica.
  std::vector<Ort::Value> run_to_device(const std::vector<TensorView>& inputs,
                                        const std::vector<size_t>& outputs = {}) const;

  // Counters of the runs above (the unbatched path): a few relaxed atomics.
  struct DirectStats {
    uint64_t requests = 0, failed = 0;
    double run_us_total = 0;
  };
  DirectStats direct_stats() const noexcept;
  void reset_direct_stats() const noexcept;

  struct Key {
   private:
    Key() = default;
    friend class SessionPool;
  };
  explicit SessionPool(Key, size_t replicas);

 private:
  size_t least_busy() const noexcept;
  struct ContainerDeleter {
    void operator()(OrtPrepackedWeightsContainer* c) const noexcept;
  };
  // Declared before sessions_: they must outlive them.
  std::shared_ptr<void> keepalive_;
  std::vector<Ort::Value> initializers_;
  std::unique_ptr<OrtPrepackedWeightsContainer, ContainerDeleter> prepacked_;
  std::vector<std::shared_ptr<Session>> sessions_;
  std::unique_ptr<std::atomic<int>[]> in_flight_;
  mutable std::atomic<uint64_t> direct_requests_{0}, direct_failed_{0}, direct_ns_{0};
  friend struct DirectTimer;
  RequestLimits limits_;
};

}  // namespace fastort
