// The batching policy as pure functions: which models can be batched, when a
// queue dispatches a batch, which requests join it, and when the queue is full.
// No threads and no onnxruntime calls: the Batcher (batcher.h) asks these, the
// Python package asks batchability() through the binding, and
// cpp/tests/test_batch_policy.cpp checks them one by one.
#pragma once

#include <array>
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
  // Adaptive dispatch (default): a free replica runs what is queued at once,
  // unless the learned costs and arrival rate say one more row is worth waiting
  // for; batches are capped at the size whose cost per row is lowest. Off: the
  // fixed rule (wait for max_batch_size rows or max_delay while a batch runs).
  bool adaptive = true;
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
  size_t replicas = 1;              // workers (one per replica)
  const struct CostModel* costs = nullptr;  // what the queue learned (adaptive only)
};

// What an adaptive queue learned: the time a batch takes per row, by batch
// size bucket (bucket b holds batches of [2^b, 2^(b+1)) rows), as EWMAs, and
// the gap between arriving rows (EWMA). Kept by the Batcher under its lock.
struct CostModel {
  static constexpr size_t kBuckets = 16;
  std::array<double, kBuckets> us_per_row{};  // 0: not measured yet
  std::array<uint64_t, kBuckets> samples{};
  double arrival_gap_us = 0;                  // per row; 0: unknown
  Clock::time_point last_arrival{};
  bool has_arrival = false;
};
size_t bucket_of(size_t rows) noexcept;
size_t bucket_low(size_t bucket) noexcept;   // smallest row count of a bucket
size_t bucket_high(size_t bucket) noexcept;  // largest
// A batch of `rows` rows took `us` microseconds.
void observe_run(CostModel& costs, size_t rows, double us, double alpha = 0.2) noexcept;
// `rows` rows arrived at `now`.
void observe_arrival(CostModel& costs, size_t rows, Clock::time_point now, double alpha = 0.1) noexcept;
// The expected time (µs) of a batch of `rows` rows from the nearest measured
// bucket; negative when nothing was measured.
double expected_us(const CostModel& costs, size_t rows) noexcept;
// The batch size that pays: the top of the bucket after the largest one whose
// cost per row is within 10% of the best measured, when the largest measured
// bucket is worse than that; max_batch_size while larger sizes are unmeasured
// or as good.
// (A bucket counts as worse after kMinSamples runs; the cap reaches into the
// next bucket so that it keeps being measured.)
size_t batch_cap(const BatchConfig& config, const CostModel* costs) noexcept;
constexpr uint64_t kMinSamples = 3;
// Rows one free worker takes from `queued_rows` when `free_workers` workers
// (itself included) are free: an even share, at most the cap.
size_t take_rows(const BatchConfig& config, const CostModel* costs, size_t queued_rows, size_t free_workers) noexcept;

enum class Dispatch {
  Wait,         // not yet: wake at Decision::wake (or earlier, on news)
  Closing,      // the queue is draining
  Idle,         // no batch is running anywhere: waiting would only add latency
  Unbatchable,  // requests run one at a time
  Delayed,      // the head waited max_delay
  Full,         // max_batch_size rows (or the learned cap) are waiting
  Free,         // adaptive: a replica is free and waiting for more rows does not pay
  Inline,       // adaptive: the queue was empty and a replica free: ran on the caller's thread
  Direct,       // adaptive: the route learner measured unbatched runs faster: ran on the caller's thread
};
constexpr size_t kDispatchKinds = 9;
struct Decision {
  Dispatch what = Dispatch::Wait;
  Clock::time_point wake = Clock::time_point::max();  // for Wait: when the head is due
  bool dispatch() const noexcept { return what != Dispatch::Wait; }
};
// When to dispatch: at once when closing, idle or unbatchable; when the cap
// (max_batch_size, or the learned cap) rows wait; when the head waited
// max_delay. Adaptive: otherwise at once (Free) unless every other replica is
// busy and the next row is expected sooner than the time one more row in this
// batch saves (from the learned costs); then wait for it, never past the
// head's max_delay. Not adaptive: wait until the head is due.
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

// -- the learned route -------------------------------------------------------
// Whether batching pays is not only a matter of the cost per row: unbatched
// runs from many waiting callers run concurrently on every core and hide the
// callers' own work (the GIL, array conversion), where one batch at a time
// does not. On a small model the concurrent unbatched runs can win though the
// cost model says batches pay. So an adaptive queue whose callers wait for
// their results (Engine.run) measures both routes under the load it has:
// it serves in one mode for a while, then probes the other for one epoch,
// and keeps the one that completed more requests per second (or, when the
// two are within the margin, as under an open-loop load that both keep up
// with, the one with the lower mean latency). Probes back off while they
// keep losing and start again when one wins.
enum class RouteMode : uint8_t { Queue = 0, Direct = 1 };
const char* to_string(RouteMode mode) noexcept;

struct RouteTiming {
  std::chrono::microseconds min_epoch{50000};   // an epoch counts at least this long ...
  uint64_t min_requests = 64;                   // ... and this many completions,
  std::chrono::microseconds max_epoch{1000000}; // or ends here with at least 4 (a slow model)
  std::chrono::microseconds give_up{10000000};  // or here with whatever it has
  uint32_t first_interval = 4;                  // epochs in the chosen mode between probes
  uint32_t max_interval = 64;                   // the back-off's ceiling
  double throughput_margin = 0.05;              // throughput decides beyond this
  double latency_margin = 0.05;                 // then mean latency beyond this; else the incumbent stays
};

struct RouteEpoch {
  double per_s = 0;       // completions per second
  double mean_us = 0;     // mean latency of those completions
  uint64_t requests = 0;
  bool valid() const noexcept { return requests > 0; }
};

struct RouteLearner {
  RouteMode mode = RouteMode::Queue;      // what waiting callers get now
  RouteMode chosen = RouteMode::Queue;    // what the last comparison picked
  bool probing = false;           // this epoch tries the other mode
  bool settled = false;           // the previous mode's requests are done: counting
  Clock::time_point epoch_start{};  // when counting began (settled)
  uint64_t done = 0;              // completions counted in this epoch
  double latency_us = 0;          // their summed latency
  uint32_t interval = 0;          // epochs between probes now (0: not started)
  uint32_t until_probe = 0;
  std::array<uint64_t, 2> outstanding{};  // waiting callers admitted in each mode, not finished
  std::array<RouteEpoch, 2> last{};       // the latest epoch of each mode
  uint64_t epochs = 0, probes = 0, switches = 0;
};

// Starts learning at `now` in the queue mode; its first probe comes after one epoch.
void route_start(RouteLearner& r, const RouteTiming& t, Clock::time_point now) noexcept;
// A waiting caller is admitted in `mode` (r.mode, or the queue for one that
// was queued after all): counted as outstanding until route_finish.
void route_admit(RouteLearner& r, RouteMode mode) noexcept;
// A waiting caller admitted in `mode` finished after `latency_us`. Ends the
// epoch when it is long enough, and returns true when the mode changed then.
bool route_finish(RouteLearner& r, const RouteTiming& t, RouteMode mode, double latency_us, Clock::time_point now) noexcept;
// The better of two epochs' measurements: 1 when `b` beats `a` beyond the
// margins, -1 when `a` beats `b`, 0 when neither does.
int route_compare(const RouteTiming& t, const RouteEpoch& a, const RouteEpoch& b) noexcept;

// A deadline `timeout_s` seconds from now; none (time_point::max) for 0,
// negative, NaN or absurdly large timeouts.
Clock::time_point deadline_after(double timeout_s);

}  // namespace fastort
