#include "fastort/batch_policy.h"

#include <algorithm>
#include <cmath>

#include "fastort/errors.h"

namespace fastort {

void validate(const BatchConfig& config) {
  if (config.max_batch_size == 0) throw InvalidInputError("max_batch_size must be at least 1");
  if (config.priority_levels < 1) throw InvalidInputError("priority_levels must be at least 1");
  if (config.max_delay.count() < 0) throw InvalidInputError("max_delay_us must be at least 0");
}

Batchability batchability(const std::vector<IOInfo>& inputs, const std::vector<IOInfo>& outputs, size_t axis) {
  const std::string ax = "dim " + std::to_string(axis);
  auto no = [](std::string why) { return Batchability{false, std::move(why)}; };
  if (inputs.empty()) return no("the model has no inputs");
  for (const auto& io : inputs) {
    if (io.kind != ValueKind::Tensor)
      return no("input '" + io.name + "' is a " + io.type_string +
                ": sequence, map and optional inputs are never merged into batches");
    if (!io.has_shape || io.shape.size() <= axis)
      return no("input '" + io.name + "' has no " + ax + " (the batch axis; shape " + io.shape_string() + ")");
    if (io.shape[axis] >= 0)
      return no("input '" + io.name + "' has a fixed " + ax + " (the batch axis; shape " + io.shape_string() + ")");
  }
  for (const auto& io : outputs) {
    if (io.kind != ValueKind::Tensor)
      return no("output '" + io.name + "' is a " + io.type_string + ", not a tensor");
    if (io.has_shape && (io.shape.size() <= axis || io.shape[axis] >= 0))
      return no("output '" + io.name + "' has no dynamic " + ax + " (the batch axis; shape " + io.shape_string() + ")");
  }
  return {};
}

size_t bucket_of(size_t rows) noexcept {
  size_t b = 0;
  while (rows > 1 && b + 1 < CostModel::kBuckets) {
    rows >>= 1;
    ++b;
  }
  return b;
}
size_t bucket_low(size_t bucket) noexcept { return size_t{1} << bucket; }
size_t bucket_high(size_t bucket) noexcept { return (size_t{2} << bucket) - 1; }

void observe_run(CostModel& costs, size_t rows, double us, double alpha) noexcept {
  if (rows == 0 || !(us >= 0) || !std::isfinite(us)) return;
  const size_t b = bucket_of(rows);
  double per_row = us / static_cast<double>(rows);
  // A descheduled run on a loaded machine moves the estimate by at most 2x.
  if (costs.samples[b]) per_row = std::min(per_row, 2 * costs.us_per_row[b]);
  costs.us_per_row[b] = costs.samples[b] ? (1 - alpha) * costs.us_per_row[b] + alpha * per_row : per_row;
  ++costs.samples[b];
}

void observe_arrival(CostModel& costs, size_t rows, Clock::time_point now, double alpha) noexcept {
  if (rows == 0) rows = 1;
  if (costs.has_arrival && now >= costs.last_arrival) {
    const double gap = std::chrono::duration<double, std::micro>(now - costs.last_arrival).count() /
                       static_cast<double>(rows);
    costs.arrival_gap_us = costs.arrival_gap_us > 0 ? (1 - alpha) * costs.arrival_gap_us + alpha * gap : gap;
  }
  costs.last_arrival = now;
  costs.has_arrival = true;
}

double expected_us(const CostModel& costs, size_t rows) noexcept {
  if (rows == 0) return 0;
  const size_t b = bucket_of(rows);
  for (size_t d = 0; d < CostModel::kBuckets; ++d) {  // nearest measured bucket, the smaller one first
    if (b >= d && costs.samples[b - d]) return costs.us_per_row[b - d] * static_cast<double>(rows);
    if (b + d < CostModel::kBuckets && costs.samples[b + d]) return costs.us_per_row[b + d] * static_cast<double>(rows);
  }
  return -1;
}

size_t batch_cap(const BatchConfig& config, const CostModel* costs) noexcept {
  const size_t max = config.max_batch_size;
  if (!config.adaptive || costs == nullptr) return max;
  double best = 0;
  for (size_t b = 0; b < CostModel::kBuckets; ++b)
    if (costs->samples[b] && (best == 0 || costs->us_per_row[b] < best)) best = costs->us_per_row[b];
  if (best <= 0) return max;
  size_t last_good = 0;  // the largest bucket within 10% of the best
  bool larger_worse = false;
  for (size_t b = 0; b < CostModel::kBuckets; ++b) {
    if (!costs->samples[b]) continue;
    const bool good = costs->us_per_row[b] <= best * 1.1;
    if (good) last_good = b;
    // ends true when the largest measured bucket is worse (on a few samples, not one)
    larger_worse = !good && costs->samples[b] >= kMinSamples;
  }
  if (!larger_worse) return max;
  // Up to the next bucket: it keeps being measured, so a cap set by noise recovers.
  return std::max<size_t>(1, std::min(max, bucket_high(std::min(last_good + 1, CostModel::kBuckets - 1))));
}

size_t take_rows(const BatchConfig& config, const CostModel* costs, size_t queued_rows, size_t free_workers) noexcept {
  const size_t cap = batch_cap(config, costs);
  if (!config.adaptive || free_workers <= 1) return cap;
  const size_t share = (queued_rows + free_workers - 1) / free_workers;
  return std::max<size_t>(1, std::min(cap, share));
}

Decision decide(const BatchConfig& config, const QueueState& queue, Clock::time_point now) {
  if (queue.closing) return {Dispatch::Closing};
  if (queue.in_flight == 0) return {Dispatch::Idle};
  if (!queue.batchable) return {Dispatch::Unbatchable};
  const auto due = queue.oldest + config.max_delay;
  const size_t cap = batch_cap(config, queue.costs);
  if (queue.rows_like_oldest >= cap) return {Dispatch::Full};
  if (due <= now) return {Dispatch::Delayed};
  if (!config.adaptive) return {Dispatch::Wait, due};
  // Adaptive: the asking worker is free. Another free replica means replica
  // time is not scarce: run now.
  if (queue.in_flight + 1 < queue.replicas || queue.costs == nullptr) return {Dispatch::Free};
  const CostModel& c = *queue.costs;
  const size_t rows = std::max<size_t>(1, queue.rows_like_oldest);
  const double now_us = expected_us(c, rows), one_us = expected_us(c, 1), more_us = expected_us(c, rows + 1);
  if (c.arrival_gap_us <= 0 || now_us < 0 || one_us < 0 || more_us < 0) return {Dispatch::Free};
  const double saving_us = now_us + one_us - more_us;  // one more row here vs in a batch of its own
  if (!(c.arrival_gap_us < saving_us)) return {Dispatch::Free};
  const auto next = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::micro>(c.arrival_gap_us));
  if (next > due) return {Dispatch::Free};
  return {Dispatch::Wait, next};
}

const char* to_string(Dispatch what) noexcept {
  switch (what) {
    case Dispatch::Wait: return "wait";
    case Dispatch::Closing: return "closing";
    case Dispatch::Idle: return "idle";
    case Dispatch::Unbatchable: return "unbatchable";
    case Dispatch::Delayed: return "delayed";
    case Dispatch::Full: return "full";
    case Dispatch::Free: return "free";
    case Dispatch::Inline: return "inline";
    case Dispatch::Direct: return "direct";
  }
  return "?";
}

const char* to_string(RouteMode mode) noexcept { return mode == RouteMode::Direct ? "direct" : "queue"; }

namespace {
RouteMode other(RouteMode m) noexcept { return m == RouteMode::Queue ? RouteMode::Direct : RouteMode::Queue; }
size_t idx(RouteMode m) noexcept { return static_cast<size_t>(m); }
}  // namespace

void route_start(RouteLearner& r, const RouteTiming& t, Clock::time_point now) noexcept {
  r = RouteLearner{};
  r.interval = std::max<uint32_t>(1, t.first_interval);
  r.until_probe = 1;
  r.settled = true;
  r.epoch_start = now;
}

void route_admit(RouteLearner& r, RouteMode mode) noexcept { ++r.outstanding[idx(mode)]; }

int route_compare(const RouteTiming& t, const RouteEpoch& a, const RouteEpoch& b) noexcept {
  if (!a.valid() || !b.valid()) return a.valid() == b.valid() ? 0 : (b.valid() ? 1 : -1);
  if (b.per_s > a.per_s * (1 + t.throughput_margin)) return 1;
  if (a.per_s > b.per_s * (1 + t.throughput_margin)) return -1;
  if (b.mean_us * (1 + t.latency_margin) < a.mean_us) return 1;
  if (a.mean_us * (1 + t.latency_margin) < b.mean_us) return -1;
  return 0;
}

bool route_finish(RouteLearner& r, const RouteTiming& t, RouteMode mode, double latency_us,
                  Clock::time_point now) noexcept {
  if (r.outstanding[idx(mode)]) --r.outstanding[idx(mode)];
  if (r.interval == 0) return false;  // not learning
  if (!r.settled) {
    // Requests admitted in the previous mode still run: the new mode's epoch
    // counts from when the last of them is done.
    if (r.outstanding[idx(other(r.mode))] == 0) {
      r.settled = true;
      r.epoch_start = now;
      r.done = 0;
      r.latency_us = 0;
    }
    return false;
  }
  if (mode != r.mode) return false;
  ++r.done;
  r.latency_us += latency_us;
  const auto len = now - r.epoch_start;
  const bool over = (len >= t.min_epoch && r.done >= t.min_requests) || (len >= t.max_epoch && r.done >= 4) ||
                    len >= t.give_up;
  if (!over) return false;
  const double seconds = std::chrono::duration<double>(len).count();
  RouteEpoch e;
  e.requests = r.done;
  e.per_s = seconds > 0 ? static_cast<double>(r.done) / seconds : 0;
  e.mean_us = r.latency_us / static_cast<double>(r.done);
  r.last[idx(r.mode)] = e;
  ++r.epochs;
  RouteMode next = r.chosen;
  if (r.probing) {
    ++r.probes;
    r.probing = false;
    if (route_compare(t, r.last[idx(r.chosen)], e) > 0) {  // the probe won: switch, probe back soon
      r.chosen = r.mode;
      r.interval = std::max<uint32_t>(1, t.first_interval);
      ++r.switches;
    } else {  // it lost (or tied): probe less often
      r.interval = std::min(std::max<uint32_t>(1, t.max_interval), r.interval * 2);
    }
    r.until_probe = r.interval;
    next = r.chosen;
  } else if (r.until_probe > 0 && --r.until_probe == 0) {
    r.probing = true;
    next = other(r.chosen);
  }
  const bool changed = next != r.mode;
  r.mode = next;
  r.done = 0;
  r.latency_us = 0;
  r.epoch_start = now;
  r.settled = !changed || r.outstanding[idx(other(next))] == 0;
  return changed;
}

bool runs_alone(const BatchConfig& config, bool batchable, size_t head_rows) noexcept {
  return !batchable || head_rows == 0 || head_rows >= config.max_batch_size;
}

bool fits(const BatchConfig& config, size_t batch_rows, size_t rows) noexcept {
  return rows > 0 && batch_rows + rows <= config.max_batch_size;
}

bool admits(const BatchConfig& config, size_t queued_requests, size_t queued_rows, size_t rows) noexcept {
  if (config.max_queue_requests && queued_requests >= config.max_queue_requests) return false;
  if (config.max_queue_rows && queued_requests > 0 && queued_rows + rows > config.max_queue_rows) return false;
  return true;
}

Clock::time_point deadline_after(double timeout_s) {
  if (!(timeout_s > 0) || timeout_s > 1e9) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
}

}  // namespace fastort
