#include "pool.h"

#include "errors.h"
#include "runtime.h"

namespace fastort {

void SessionPool::ContainerDeleter::operator()(OrtPrepackedWeightsContainer* c) const noexcept {
  if (c != nullptr) Ort::GetApi().ReleasePrepackedWeightsContainer(c);
}

SessionPool::SessionPool(Key, size_t replicas) : in_flight_(std::make_unique<std::atomic<int>[]>(replicas)) {
  for (size_t i = 0; i < replicas; ++i) in_flight_[i].store(0);
}

std::shared_ptr<SessionPool> SessionPool::open(const ModelSource& source, const SessionOptions& options,
                                               size_t replicas, bool share_weights) {
  if (replicas == 0) throw InvalidInputError("replicas must be at least 1");
  Runtime::get();
  auto pool = std::make_shared<SessionPool>(Key{}, replicas);
  if (share_weights) {
    OrtPrepackedWeightsContainer* container = nullptr;
    Ort::ThrowOnError(Ort::GetApi().CreatePrepackedWeightsContainer(&container));
    pool->prepacked_.reset(container);
  }
  for (size_t i = 0; i < replicas; ++i) {
    pool->sessions_.push_back(source.data != nullptr || source.path.empty()
                                  ? Session::open_bytes(source.data, source.size, options, source.label,
                                                        pool->prepacked_.get())
                                  : Session::open_file(source.path, options, pool->prepacked_.get()));
  }
  return pool;
}

std::vector<Ort::Value> SessionPool::run(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                                         const std::vector<TensorView>& out) const {
  size_t best = 0;
  for (size_t i = 1; i < sessions_.size(); ++i)
    if (in_flight_[i].load(std::memory_order_relaxed) < in_flight_[best].load(std::memory_order_relaxed)) best = i;
  struct Count {
    std::atomic<int>& n;
    explicit Count(std::atomic<int>& c) : n(c) { n.fetch_add(1, std::memory_order_relaxed); }
    ~Count() { n.fetch_sub(1, std::memory_order_relaxed); }
  } count(in_flight_[best]);
  return sessions_[best]->run(inputs, outputs, out);
}

}  // namespace fastort
