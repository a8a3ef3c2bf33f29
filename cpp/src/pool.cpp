#include "fastort/pool.h"

#include <chrono>
#include <exception>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "fastort/errors.h"
#include "fastort/runtime.h"

namespace fastort {

void SessionPool::ContainerDeleter::operator()(OrtPrepackedWeightsContainer* c) const noexcept {
  if (c != nullptr) Ort::GetApi().ReleasePrepackedWeightsContainer(c);
}

SessionPool::SessionPool(Key, size_t replicas) : in_flight_(std::make_unique<std::atomic<int>[]>(replicas)) {
  for (size_t i = 0; i < replicas; ++i) in_flight_[i].store(0);
}

std::shared_ptr<SessionPool> SessionPool::open(const ModelSource& source, const SessionOptions& options,
                                               size_t replicas, bool share_weights,
                                               const std::vector<std::pair<std::string, TensorView>>& initializers,
                                               std::shared_ptr<void> keepalive) {
  if (replicas == 0) throw InvalidInputError("replicas must be at least 1");
  const Runtime& rt = Runtime::get();
  auto pool = std::make_shared<SessionPool>(Key{}, replicas);
  pool->keepalive_ = std::move(keepalive);
  SharedState shared;
  try {
    for (const auto& [name, view] : initializers) {
      const size_t item = element_size(view.type);
      if (item == 0) throw InvalidInputError("shared initializer '" + name + "' has an unsupported element type");
      const size_t bytes = checked_element_count(view.shape, item, "initializer '" + name + "'") * item;
      pool->initializers_.push_back(Ort::Value::CreateTensor(rt.cpu_memory(), view.data, bytes, view.shape.data(),
                                                             view.shape.size(), view.type));
      shared.initializers.emplace_back(name, pool->initializers_.back());
    }
    if (share_weights) {
      OrtPrepackedWeightsContainer* container = nullptr;
      Ort::ThrowOnError(Ort::GetApi().CreatePrepackedWeightsContainer(&container));
      pool->prepacked_.reset(container);
      shared.prepacked = container;
    }
  } catch (const Ort::Exception& e) {
    throw ModelLoadError(std::string("cannot share the model's weights: ") + e.what());
  }
  for (size_t i = 0; i < replicas; ++i) {
    pool->sessions_.push_back(source.data != nullptr || source.path.empty()
                                  ? Session::open_bytes(source.data, source.size, options, source.label, shared)
                                  : Session::open_file(source.path, options, shared));
  }
#if defined(__GLIBC__)
  // Loading parses the model into many temporary buffers; hand the freed heap
  // back to the system so that the engine's footprint is what it keeps.
  malloc_trim(0);
#endif
  return pool;
}

size_t SessionPool::least_busy() const noexcept {
  size_t best = 0;
  for (size_t i = 1; i < sessions_.size(); ++i)
    if (in_flight_[i].load(std::memory_order_relaxed) < in_flight_[best].load(std::memory_order_relaxed)) best = i;
  return best;
}

// Counts one direct run and its time; a run left by an exception counts as failed.
struct DirectTimer {
  const SessionPool& pool;
  const int exceptions = std::uncaught_exceptions();
  const std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  explicit DirectTimer(const SessionPool& p) : pool(p) {}
  ~DirectTimer() {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start);
    pool.direct_requests_.fetch_add(1, std::memory_order_relaxed);
    pool.direct_ns_.fetch_add(static_cast<uint64_t>(ns.count()), std::memory_order_relaxed);
    if (std::uncaught_exceptions() > exceptions) pool.direct_failed_.fetch_add(1, std::memory_order_relaxed);
  }
};

SessionPool::DirectStats SessionPool::direct_stats() const noexcept {
  DirectStats s;
  s.requests = direct_requests_.load(std::memory_order_relaxed);
  s.failed = direct_failed_.load(std::memory_order_relaxed);
  s.run_us_total = static_cast<double>(direct_ns_.load(std::memory_order_relaxed)) / 1000.0;
  return s;
}

void SessionPool::reset_direct_stats() const noexcept {
  direct_requests_.store(0, std::memory_order_relaxed);
  direct_failed_.store(0, std::memory_order_relaxed);
  direct_ns_.store(0, std::memory_order_relaxed);
}

namespace {
struct Count {
  std::atomic<int>& n;
  explicit Count(std::atomic<int>& c) : n(c) { n.fetch_add(1, std::memory_order_relaxed); }
  ~Count() { n.fetch_sub(1, std::memory_order_relaxed); }
};
}  // namespace

std::vector<Ort::Value> SessionPool::run(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                                         const std::vector<TensorView>& out, size_t replica) const {
  if (replica != kLeastBusy) {
    check_limits(inputs);
    if (replica == kQueueLeastBusy) replica = least_busy();
    const auto& session = sessions_.at(replica);
    Count count(in_flight_[replica]);
    return session->run(inputs, outputs, out);
  }
  DirectTimer timer(*this);
  check_limits(inputs);
  const size_t best = least_busy();
  Count count(in_flight_[best]);
  return sessions_[best]->run(inputs, outputs, out);
}

std::vector<Ort::Value> SessionPool::run_to_device(const std::vector<TensorView>& inputs,
                                                   const std::vector<size_t>& outputs) const {
  DirectTimer timer(*this);
  check_limits(inputs);
  const size_t best = least_busy();
  Count count(in_flight_[best]);
  return sessions_[best]->run_to_device(inputs, outputs);
}

}  // namespace fastort
