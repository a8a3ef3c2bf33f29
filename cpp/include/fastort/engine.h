// The engine a caller holds: a pool of sessions of one model, its request
// limits, and (once started) the request queue, with the rules that route a
// run either straight to a replica or through the queue. Plain C++: the Python
// binding (cpp/python/) converts arrays and results around it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fastort/batch_policy.h"
#include "fastort/batcher.h"
#include "fastort/pool.h"
#include "fastort/shape_guess.h"

namespace fastort {

// Everything an engine is opened with (Python: fastort.EngineOptions, converted once).
struct EngineConfig {
  SessionOptions session;
  size_t replicas = 1;       // sessions serving requests in parallel
  bool share_weights = true;  // replicas share one prepacked-weights container
  RequestLimits limits;       // bounds on one request
};

class Engine {
 public:
  // Opens `config.replicas` sessions of the model; `initializers` (name, view
  // over memory that `keepalive` owns) are held once and shared by every replica.
  static std::shared_ptr<Engine> open(const ModelSource& source, const EngineConfig& config,
                                      const std::vector<std::pair<std::string, TensorView>>& initializers = {},
                                      std::shared_ptr<void> keepalive = nullptr);
  explicit Engine(std::shared_ptr<SessionPool> pool);
  ~Engine();  // drains the queue
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const Session& model() const { return pool_->front(); }
  const SessionPool& pool() const noexcept { return *pool_; }
  size_t replicas() const noexcept { return pool_->size(); }
  Device device() const noexcept { return model().device(); }
  // What each replica runs on, e.g. "OpenVINOExecutionProvider(CPU), CPUExecutionProvider".
  std::vector<std::string> replica_providers() const;

  // -- the request queue ---------------------------------------------------------
  // Starts the queue behind submit(): the batcher, or with max_batch_size 1 a
  // scheduler. With `route_runs`, unbatched runs go through it too (see route()).
  void start_queue(const BatchConfig& config, bool route_runs);
  bool has_queue() const noexcept { return batcher_ != nullptr; }
  // Whether queued requests are merged into batches.
  bool batching() const noexcept;
  std::string unbatchable_reason() const;

  // Whether runs may go through the queue at all (see route()).
  bool routes_runs() const noexcept { return route_runs_ && batcher_ != nullptr; }
  enum class Route { Direct, Queue };
  // Where a run goes: through the queue when runs are routed there, the caller
  // gave no output buffers and every input is in host memory (the queue batches
  // host rows); else straight to the least busy replica.
  Route route(bool has_out, const std::vector<TensorView>& inputs) const noexcept;
  static bool on_host(const std::vector<TensorView>& inputs) noexcept;

  // A claim on the replica an idle adaptive queue lends a caller for one run
  // of its own (Batcher::begin_inline): valid() when granted; the destructor
  // gives the replica back and records the run (failed unless succeeded()).
  class InlineClaim {
   public:
    InlineClaim() = default;
    InlineClaim(Batcher* batcher, size_t replica, size_t rows) noexcept
        : batcher_(batcher), replica_(replica), rows_(rows), started_(Clock::now()) {}
    InlineClaim(InlineClaim&& o) noexcept { *this = std::move(o); }
    InlineClaim& operator=(InlineClaim&& o) noexcept;
    InlineClaim(const InlineClaim&) = delete;
    InlineClaim& operator=(const InlineClaim&) = delete;
    ~InlineClaim();
    bool valid() const noexcept { return batcher_ != nullptr; }
    // The replica to run on: the one lent, or Batcher::kDirect (the least busy
    // one, a direct run of the learned route, counted by the queue).
    size_t replica() const noexcept { return replica_; }
    void succeeded() noexcept { ok_ = true; }
    // Gives the replica back now (a successful run), e.g. before the caller
    // waits for a lock of its own (the GIL) that queued requests must not wait for.
    void end() noexcept;

   private:
    void release() noexcept;
    Batcher* batcher_ = nullptr;
    size_t replica_ = 0, rows_ = 0;
    Clock::time_point started_{};
    bool ok_ = false;
  };
  // For a host run with no output buffers on an engine whose runs are routed
  // through the queue: a claim when the queue is idle (run it yourself, on
  // claim.replica()), else an invalid one (submit the request).
  InlineClaim claim_inline(const std::vector<TensorView>& inputs, int priority,
                           Clock::time_point deadline = Clock::time_point::max());

  // Queues a request (see Batcher::submit); throws Error when no queue runs.
  uint64_t submit(Request request, bool run_here = false);
  bool cancel(uint64_t id);
  // Stops the queue (see Batcher::close); nothing when none runs.
  void close(bool drain);
  BatcherStats stats() const;
  void reset_stats();

  // -- direct runs --------------------------------------------------------------
  // Throws RequestTooLargeError when `inputs` exceed the request limits.
  void check_limits(const std::vector<TensorView>& inputs) const { pool_->check_limits(inputs); }
  // `replica`: the one an InlineClaim holds (its run is counted by the queue),
  // or SessionPool::kLeastBusy.
  std::vector<Ort::Value> run(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs = {},
                              const std::vector<TensorView>& out = {},
                              size_t replica = SessionPool::kLeastBusy) const {
    return pool_->run(inputs, outputs, out, replica);
  }
  std::vector<Ort::Value> run_to_device(const std::vector<TensorView>& inputs,
                                        const std::vector<size_t>& outputs = {}) const {
    return pool_->run_to_device(inputs, outputs);
  }
  // Runs into buffers allocated in guessed shapes (shapes()); false (the guess
  // counted as a miss) when onnxruntime refused them: the caller runs again.
  bool run_guessed(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                   const std::vector<TensorView>& out, size_t replica = SessionPool::kLeastBusy) const;
  ShapeGuesser& shapes() const noexcept { return *guess_; }

 private:
  std::shared_ptr<SessionPool> pool_;
  std::unique_ptr<Batcher> batcher_;
  bool route_runs_ = false;
  std::unique_ptr<ShapeGuesser> guess_ = std::make_unique<ShapeGuesser>();
};

}  // namespace fastort
