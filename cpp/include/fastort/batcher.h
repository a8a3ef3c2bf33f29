// Dynamic batching: concurrent requests are queued, merged into batches along
// the batch axis, run on a free replica, and each request gets its own slice of
// the batch outputs (views, no copy).
//
// One worker thread per replica forms and runs batches; when to dispatch, which
// requests join a batch and when the queue is full is the policy of
// batch_policy.h (max_batch_size rows, the oldest request waited max_delay, or
// at once when no batch runs anywhere). Requests whose non-batch dims differ
// are never mixed, except along dims configured for padding. When a merged
// batch fails, each of its requests runs again alone, so that only the request
// whose values make the model fail gets an error.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fastort/batch_policy.h"
#include "fastort/pool.h"
#include "fastort/tensor.h"

namespace fastort {

// One output of one request: a view into the batch output (kept alive by
// `owner`), or, for string tensors, the request's own strings.
struct OutputSlice {
  std::shared_ptr<void> owner;
  Ort::Value* value = nullptr;             // the whole value, when the request ran alone
  TensorView view;                          // a slice of a tensor output
  std::vector<int64_t> strides;             // in bytes, for `view`
  std::vector<std::string> strings;         // string outputs of a slice
  bool is_strings = false;
};

struct Outcome {
  std::exception_ptr error;                 // set when the request failed
  std::vector<OutputSlice> outputs;         // one per model output otherwise
  double queue_us = 0;                      // enqueued -> dispatched to a replica
  double run_us = 0;                        // dispatched -> finished (the batch's run, splitting)
};

struct Request {
  std::vector<TensorView> inputs;           // one per model input, in model order
  std::shared_ptr<void> keepalive;          // whatever owns the inputs' memory
  Clock::time_point deadline = Clock::time_point::max();
  int priority = 0;
  // Called exactly once, from a worker thread (or from close()/submit() on failure
  // paths), unless cancel() removed the request first. Must not throw.
  std::function<void(Outcome&&)> done;
};

struct BatcherStats {
  uint64_t requests = 0, rows = 0, batches = 0;
  uint64_t failed = 0, timed_out = 0, cancelled = 0, rejected = 0;
  std::vector<uint64_t> batch_rows_histogram;  // [n] = batches of n rows; last: larger
  size_t queue_requests = 0, queue_rows = 0;
  double latency_p50_us = 0, latency_p90_us = 0, latency_p99_us = 0;
  double elapsed_s = 0;                        // since construction or reset
  size_t in_flight_batches = 0;
  // What the adaptive policy learned (see batch_policy.h).
  bool adaptive = false;
  size_t batch_cap = 0;                        // the size that pays (max_batch_size until learned)
  CostModel costs;
  std::array<uint64_t, kDispatchKinds> dispatch{};  // batches by Dispatch reason
  bool learns_route = false;                   // waiting callers' route is measured (see RouteLearner)
  RouteLearner route;
  double queue_us_total = 0, run_us_total = 0;  // summed over finished requests: queued, then running
};

class Batcher {
 public:
  Batcher(std::shared_ptr<SessionPool> pool, BatchConfig options);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues a request. Throws InvalidInputError (does not fit the model),
  // QueueFullError (backpressure) or ClosedError. Returns an id for cancel().
  // With `run_here` (a caller that waits for the result anyway), an adaptive
  // queue that is empty while no batch runs anywhere runs the request on the
  // calling thread at once, skipping two thread hand-offs; it returns 0 then,
  // and `done` was called. Call it without holding locks `done` needs.
  uint64_t submit(Request request, bool run_here = false);

  // The inline route without a Request (the caller runs the request itself,
  // e.g. into buffers it allocated): when the adaptive queue is empty and no
  // batch runs anywhere, marks a free replica busy and returns its index;
  // kNoReplica otherwise (queue the request instead; also when its deadline
  // already passed, so that it fails as a queued one would). Throws ClosedError and
  // InvalidInputError (priority) like submit. Every claim must be ended by
  // end_inline, which records the run as an inline batch of `rows`.
  // In the direct mode of the learned route the claim is kDirect: the caller
  // runs on the least busy replica, concurrently with others, as an engine
  // without a queue would (SessionPool::run takes it as it is).
  static constexpr size_t kNoReplica = static_cast<size_t>(-1);
  static constexpr size_t kDirect = SessionPool::kQueueLeastBusy;
  size_t begin_inline(size_t rows, int priority, Clock::time_point deadline = Clock::time_point::max());
  void end_inline(size_t replica, size_t rows, Clock::time_point started, bool ok) noexcept;
  // A request's rows along the batch axis (1 when the model is not batched).
  size_t rows_of(const std::vector<TensorView>& inputs) const noexcept;

  // Removes a queued request; false when it already runs or finished. Its
  // `done` is not called.
  bool cancel(uint64_t id);

  // Stops accepting requests. With drain, every queued request still runs;
  // without, each fails with ClosedError. Waits for running batches. Idempotent.
  void close(bool drain = true);

  bool batching() const noexcept { return batchable_; }
  // Why the model cannot be batched ("" when it can).
  const std::string& unbatchable_reason() const noexcept { return unbatchable_reason_; }
  const BatchConfig& options() const noexcept { return options_; }
  BatcherStats stats() const;
  void reset_stats();

 private:
  struct Pending;
  struct Worker;
  using PendingPtr = std::shared_ptr<Pending>;

  void worker_loop(size_t replica);
  std::vector<PendingPtr> take_batch(Clock::time_point now);
  void take_expired(Clock::time_point now, std::vector<PendingPtr>& expired);
  Dispatch ready(Clock::time_point now, Clock::time_point& wake) const;
  void run_batch(size_t replica, std::vector<PendingPtr>& batch);
  void finish(Pending& p, Outcome&& outcome, bool ok);
  void record_latency(double us);  // under mu_

  std::shared_ptr<SessionPool> pool_;
  BatchConfig options_;
  bool batchable_ = true;
  std::string unbatchable_reason_;
  std::vector<std::vector<std::string>> linked_output_dims_;  // per output: padded dim names

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::deque<PendingPtr>> queues_;  // one per priority level
  size_t queued_requests_ = 0, queued_rows_ = 0;
  size_t in_flight_ = 0;
  std::vector<char> busy_;  // per replica: a batch (or an inline run) is running on it
  uint64_t next_id_ = 1;
  bool closing_ = false, drain_ = true;

  // Stats, under mu_.
  BatcherStats counters_;
  CostModel costs_;  // learned, kept across reset_stats
  bool learn_route_ = false;
  RouteTiming route_timing_;
  RouteLearner route_;  // learned, kept across reset_stats
  Clock::time_point stats_since_;
  std::vector<double> latencies_us_;   // ring buffer of recent latencies
  size_t latency_next_ = 0;

  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::once_flag closed_once_;
};

}  // namespace fastort
