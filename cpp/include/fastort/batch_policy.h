// The batching policy as pure functions: which models can be batched, when a
// queue dispatches a batch, which requests join it, and when the queue is full.
// No threads and no onnxruntime calls: the Batcher (batcher.h) asks these, the
// Python package asks batchability() through the binding, and
// cpp/tests/test_batch_policy.cpp checks them one by one.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fastort/tensor.h"

namespace fastort {

using Clock = std::chrono::steady_clock;

// Pad input `input` along `dim` to the longest request of the batch with `value`
// (strings: empty). Outputs whose dim carries the same symbolic name are cut
// back to each request's own length.
struct PadSpec {
  size_t input = 0;
  size_t dim = 0;
  double value = 0.0;
};

// The request queue's settings (Python: fastort.BatchConfig, converted once).
struct BatchConfig {
  size_t max_batch_size = 32;                    // rows per batch
  std::chrono::microseconds max_delay{2000};     // longest wait to fill a batch
  size_t max_queue_requests = 1024;              // queued requests (0: no limit)
  size_t max_queue_rows = 0;                     // queued rows (0: no limit)
  size_t batch_axis = 0;
  int priority_levels = 1;                       // 0 is the most urgent
  std::vector<PadSpec> padding;
};
using BatcherOptions = BatchConfig;  // the name the Batcher used first

// Throws InvalidInputError for settings no queue can run with.
void validate(const BatchConfig& config);

// Whether a model with these inputs and outputs can be batched along `axis`:
// every input a tensor with a dynamic dim `axis`, every output a tensor whose
// dim `axis` is dynamic (or whose rank the model does not give). `reason` says
// why not ("" when it can).
struct Batchability {
  bool ok = true;
  std::string reason;
};
Batchability batchability(const std::vector<IOInfo>& inputs, const std::vector<IOInfo>& outputs, size_t axis);

// What a queue looks like to the dispatch rule, taken under the queue's lock.
struct QueueState {
  bool closing = false;             // draining: everything goes at once
  size_t in_flight = 0;             // batches running on any replica
  bool batchable = true;            // the model can be batched
  Clock::time_point oldest;         // when the request at the head of the queue arrived
  size_t rows_like_oldest = 0;      // queued rows that may join the head's batch
};

enum class Dispatch {
  Wait,         // not yet: wake at Decision::wake (or earlier, on news)
  Closing,      // the queue is draining
  Idle,         // no batch is running anywhere: waiting would only add latency
  Unbatchable,  // requests run one at a time
  Delayed,      // the head waited max_delay
  Full,         // max_batch_size rows are waiting
};
struct Decision {
  Dispatch what = Dispatch::Wait;
  Clock::time_point wake = Clock::time_point::max();  // for Wait: when the head is due
  bool dispatch() const noexcept { return what != Dispatch::Wait; }
};
// When to dispatch: at once when closing, idle or unbatchable; when the head
// waited max_delay; when max_batch_size rows wait; else wait until the head is due.
Decision decide(const BatchConfig& config, const QueueState& queue, Clock::time_point now);
const char* to_string(Dispatch what) noexcept;

// The head request of a batch runs alone (nothing joins it) when the model is
// not batchable, when it has no rows, or when it fills a batch by itself.
bool runs_alone(const BatchConfig& config, bool batchable, size_t head_rows) noexcept;
// Whether a request of `rows` rows fits into a batch that holds `batch_rows`.
bool fits(const BatchConfig& config, size_t batch_rows, size_t rows) noexcept;

// Whether a queue holding `queued_requests` requests and `queued_rows` rows
// takes one more of `rows` rows (backpressure: QueueFullError otherwise). A
// request larger than max_queue_rows is taken into an empty queue.
bool admits(const BatchConfig& config, size_t queued_requests, size_t queued_rows, size_t rows) noexcept;

// A deadline `timeout_s` seconds from now; none (time_point::max) for 0,
// negative, NaN or absurdly large timeouts.
Clock::time_point deadline_after(double timeout_s);

}  // namespace fastort
