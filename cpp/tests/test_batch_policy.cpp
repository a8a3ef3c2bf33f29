// The batching policy (batch_policy.h), rule by rule: no threads, no runtime.
#include "fastort/batch_policy.h"

#include <chrono>

#include "check.h"
#include "fastort/errors.h"

using namespace fastort;
using std::chrono::microseconds;

namespace {

IOInfo tensor(const std::string& name, std::vector<int64_t> shape, bool has_shape = true) {
  IOInfo io;
  io.name = name;
  io.kind = ValueKind::Tensor;
  io.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  io.type_string = "tensor(float)";
  io.has_shape = has_shape;
  io.shape = std::move(shape);
  io.dim_names.assign(io.shape.size(), "");
  return io;
}

IOInfo sequence(const std::string& name) {
  IOInfo io;
  io.name = name;
  io.kind = ValueKind::Sequence;
  io.type_string = "seq(tensor(float))";
  return io;
}

void test_batchability() {
  const auto dyn = tensor("x", {-1, 4}), fixed = tensor("x", {2, 4}), out = tensor("y", {-1, 3});
  CHECK(batchability({dyn}, {out}, 0).ok);
  CHECK(batchability({dyn}, {out}, 0).reason.empty());

  Batchability b = batchability({fixed}, {out}, 0);
  CHECK(!b.ok);
  CHECK(b.reason.find("fixed dim 0") != std::string::npos);
  CHECK(b.reason.find("'x'") != std::string::npos);

  // The configured axis decides, not dim 0.
  CHECK(!batchability({dyn}, {out}, 1).ok);  // dim 1 of x is fixed (4)
  CHECK(batchability({tensor("x", {4, -1})}, {tensor("y", {3, -1})}, 1).ok);
  CHECK(!batchability({tensor("x", {4, -1})}, {tensor("y", {-1, 3})}, 1).ok);  // output's dim 1 is fixed

  // Rank too small, or no rank at all, on an input.
  CHECK(!batchability({tensor("x", {})}, {out}, 0).ok);
  CHECK(!batchability({tensor("x", {}, false)}, {out}, 0).ok);
  // An output whose rank the model does not give is fine; one of rank 0 is not.
  CHECK(batchability({dyn}, {tensor("y", {}, false)}, 0).ok);
  CHECK(!batchability({dyn}, {tensor("y", {})}, 0).ok);

  // Non-tensor values and models without inputs.
  b = batchability({sequence("s")}, {out}, 0);
  CHECK(!b.ok && b.reason.find("never merged into batches") != std::string::npos);
  b = batchability({dyn}, {sequence("s")}, 0);
  CHECK(!b.ok && b.reason.find("seq(tensor(float))") != std::string::npos);
  CHECK(!batchability({}, {out}, 0).ok);
  // Every input counts, not only the first.
  CHECK(!batchability({dyn, fixed}, {out}, 0).ok);
}

void test_decide() {
  BatchConfig config;
  config.adaptive = false;  // the fixed rule
  config.max_batch_size = 8;
  config.max_delay = microseconds(1000);
  const auto t0 = Clock::now();

  QueueState q;
  q.in_flight = 1;
  q.oldest = t0;
  q.rows_like_oldest = 3;
  Decision d = decide(config, q, t0 + microseconds(10));
  CHECK(!d.dispatch());
  CHECK(d.what == Dispatch::Wait);
  CHECK(d.wake == t0 + microseconds(1000));  // due when the head has waited max_delay

  CHECK(decide(config, q, t0 + microseconds(1000)).what == Dispatch::Delayed);
  q.rows_like_oldest = 8;
  CHECK(decide(config, q, t0 + microseconds(10)).what == Dispatch::Full);
  q.rows_like_oldest = 3;

  // Nothing running anywhere: a lone request never waits out the delay.
  q.in_flight = 0;
  CHECK(decide(config, q, t0).what == Dispatch::Idle);
  q.in_flight = 2;
  q.batchable = false;
  CHECK(decide(config, q, t0).what == Dispatch::Unbatchable);
  q.batchable = true;
  q.closing = true;
  CHECK(decide(config, q, t0).what == Dispatch::Closing);
  CHECK(std::string(to_string(Dispatch::Full)) == "full");

  config.max_delay = microseconds(0);  // no delay: dispatch as soon as asked
  q.closing = false;
  CHECK(decide(config, q, t0).what == Dispatch::Delayed);
}

void test_cost_model() {
  CHECK(bucket_of(1) == 0 && bucket_of(2) == 1 && bucket_of(3) == 1 && bucket_of(4) == 2 && bucket_of(31) == 4);
  CHECK(bucket_low(3) == 8 && bucket_high(3) == 15);
  CostModel c;
  CHECK(expected_us(c, 4) < 0);  // nothing measured
  observe_run(c, 1, 100);
  CHECK(expected_us(c, 1) == 100);
  CHECK(expected_us(c, 4) == 400);  // from the nearest measured bucket
  observe_run(c, 1, 200, 0.5);     // EWMA
  CHECK(expected_us(c, 1) == 150);
  observe_run(c, 0, 1e9);           // ignored
  observe_run(c, 2, -1);            // ignored
  CHECK(c.samples[1] == 0);
  CostModel o;  // an outlier (a descheduled run) moves the estimate by at most 2x per sample
  observe_run(o, 1, 100);
  observe_run(o, 1, 1e6, 0.5);
  CHECK(expected_us(o, 1) == 150);

  const auto t0 = Clock::now();
  observe_arrival(c, 1, t0);
  CHECK(c.arrival_gap_us == 0);  // one arrival: no gap yet
  observe_arrival(c, 2, t0 + microseconds(100));
  CHECK(c.arrival_gap_us == 50);  // per row
}

void test_cap_and_share() {
  BatchConfig config;
  config.max_batch_size = 32;
  CostModel c;
  CHECK(batch_cap(config, nullptr) == 32);
  CHECK(batch_cap(config, &c) == 32);  // nothing learned: explore up to max
  observe_run(c, 1, 100);
  observe_run(c, 4, 200);   // 50/row
  CHECK(batch_cap(config, &c) == 32);  // the largest measured is the best: keep growing
  observe_run(c, 16, 1600);  // 100/row: worse than 4-7 rows, but one sample may be noise
  CHECK(batch_cap(config, &c) == 32);
  observe_run(c, 16, 1600);
  observe_run(c, 16, 1600);
  CHECK(batch_cap(config, &c) == 15);  // best 4-7; 8-15 stays open to measurement
  observe_run(c, 8, 8 * 52);  // 52/row: within 10% of the best
  CHECK(batch_cap(config, &c) == 31);
  config.adaptive = false;
  CHECK(batch_cap(config, &c) == 32);
  config.adaptive = true;
  config.max_batch_size = 4;
  CHECK(batch_cap(config, &c) == 4);  // never above max_batch_size

  config.max_batch_size = 32;
  CostModel flat;
  CHECK(take_rows(config, &flat, 10, 1) == 32);  // one free worker: up to the cap
  CHECK(take_rows(config, &flat, 10, 2) == 5);   // two: an even share each
  CHECK(take_rows(config, &flat, 1, 4) == 1);
  CHECK(take_rows(config, &flat, 100, 2) == 32);
}

void test_decide_adaptive() {
  BatchConfig config;
  config.max_batch_size = 32;
  config.max_delay = microseconds(2000);
  const auto t0 = Clock::now();
  CostModel c;
  QueueState q;
  q.in_flight = 1;
  q.replicas = 2;
  q.oldest = t0;
  q.rows_like_oldest = 3;
  q.costs = &c;
  // Another replica is free: never wait for rows that may not come.
  q.in_flight = 0;
  CHECK(decide(config, q, t0).what == Dispatch::Idle);
  q.in_flight = 1;
  q.replicas = 4;
  CHECK(decide(config, q, t0).what == Dispatch::Free);
  // Every other replica busy, nothing learned: run now.
  q.replicas = 2;
  CHECK(decide(config, q, t0).what == Dispatch::Free);
  // Per-row cost flat (no saving from batching): run now even with rows arriving fast.
  observe_run(c, 1, 100);
  observe_run(c, 2, 200);
  observe_run(c, 4, 400);
  c.arrival_gap_us = 10;
  CHECK(decide(config, q, t0).what == Dispatch::Free);
  // Strong batching gain (fixed cost 1000 µs + 10/row) and rows arriving every 10 µs: wait for the next one.
  CostModel g;
  observe_run(g, 1, 1010);
  observe_run(g, 2, 1020);
  observe_run(g, 4, 1040);
  g.arrival_gap_us = 10;
  q.costs = &g;
  Decision d = decide(config, q, t0);
  CHECK(d.what == Dispatch::Wait);
  CHECK(d.wake == t0 + microseconds(10));
  // ... but not when rows arrive slower than what one more row saves,
  g.arrival_gap_us = 5000;
  CHECK(decide(config, q, t0).what == Dispatch::Free);
  // ... nor past the head's max_delay.
  g.arrival_gap_us = 10;
  CHECK(decide(config, q, t0 + microseconds(1995)).what == Dispatch::Free);
  CHECK(decide(config, q, t0 + microseconds(2000)).what == Dispatch::Delayed);
  // The learned cap counts as full.
  for (int k = 0; k < 3; ++k) observe_run(g, 16, 16 * 1000);
  CHECK(batch_cap(config, &g) == 15);
  q.rows_like_oldest = batch_cap(config, &g);
  CHECK(decide(config, q, t0).what == Dispatch::Full);
  CHECK(std::string(to_string(Dispatch::Free)) == "free");
}

void test_caps() {
  BatchConfig config;
  config.max_batch_size = 8;
  CHECK(runs_alone(config, false, 1));  // unbatchable model
  CHECK(runs_alone(config, true, 0));   // no rows: nothing to stack
  CHECK(runs_alone(config, true, 8));   // fills a batch by itself
  CHECK(runs_alone(config, true, 100));
  CHECK(!runs_alone(config, true, 7));

  CHECK(fits(config, 4, 4));
  CHECK(!fits(config, 4, 5));
  CHECK(!fits(config, 4, 0));  // empty requests run alone
  CHECK(fits(config, 0, 8));
}

void test_admits() {
  BatchConfig config;
  config.max_queue_requests = 2;
  config.max_queue_rows = 10;
  CHECK(admits(config, 0, 0, 50));   // a request larger than max_queue_rows: taken into an empty queue
  CHECK(admits(config, 1, 5, 5));
  CHECK(!admits(config, 1, 5, 6));   // rows
  CHECK(!admits(config, 2, 0, 1));   // requests
  config.max_queue_requests = 0;     // 0: no limit
  config.max_queue_rows = 0;
  CHECK(admits(config, 1000000, 1000000, 1000000));
}

void test_validate_and_deadline() {
  BatchConfig config;
  validate(config);
  config.max_batch_size = 0;
  CHECK_THROWS(validate(config), InvalidInputError);
  config.max_batch_size = 1;
  config.priority_levels = 0;
  CHECK_THROWS(validate(config), InvalidInputError);

  CHECK(deadline_after(0) == Clock::time_point::max());
  CHECK(deadline_after(-1) == Clock::time_point::max());
  CHECK(deadline_after(0.0 / 0.0) == Clock::time_point::max());
  CHECK(deadline_after(1e12) == Clock::time_point::max());
  const auto before = Clock::now();
  const auto d = deadline_after(0.5);
  CHECK(d > before + std::chrono::milliseconds(400) && d < Clock::now() + std::chrono::milliseconds(600));
}

// Drives one epoch of `n` completions in the learner's current mode, spread
// over `len`, from `t`; returns the time at its end.
Clock::time_point run_epoch(RouteLearner& r, const RouteTiming& t, Clock::time_point at, int n,
                            microseconds len, double latency_us) {
  const RouteMode mode = r.mode;
  for (int k = 0; k < n; ++k) route_admit(r, mode);
  for (int k = 1; k <= n; ++k) route_finish(r, t, mode, latency_us, at + len * k / n);
  return at + len;
}

void test_route_learner() {
  RouteTiming t;
  t.first_interval = 2;
  t.max_interval = 8;
  RouteLearner r;
  // Not started: finishing only counts down.
  route_admit(r, RouteMode::Queue);
  CHECK(!route_finish(r, t, RouteMode::Queue, 10, Clock::now()));
  CHECK(r.outstanding[0] == 0 && r.epochs == 0);

  auto now = Clock::now();
  route_start(r, t, now);
  CHECK(r.mode == RouteMode::Queue && r.settled);
  // An epoch needs both min_epoch and min_requests.
  route_admit(r, RouteMode::Queue);
  CHECK(!route_finish(r, t, RouteMode::Queue, 100, now + microseconds(60000)));
  CHECK(r.epochs == 0);
  // The first epoch ends, and the next probes the direct route.
  now = run_epoch(r, t, now + microseconds(60000), 64, microseconds(50000), 100);  // 1280 req/s
  CHECK(r.epochs == 1 && r.probing && r.mode == RouteMode::Direct);
  CHECK(r.last[0].requests == 64);
  // The probe is 2x faster: it wins, and the route switches.
  now = run_epoch(r, t, now, 128, microseconds(50000), 100);
  CHECK(r.chosen == RouteMode::Direct && r.mode == RouteMode::Direct && !r.probing);
  CHECK(r.probes == 1 && r.switches == 1 && r.interval == 2);
  // Two epochs later the queue is probed again; it loses, and probes back off.
  now = run_epoch(r, t, now, 128, microseconds(50000), 100);
  CHECK(r.mode == RouteMode::Direct);
  now = run_epoch(r, t, now, 128, microseconds(50000), 100);
  CHECK(r.probing && r.mode == RouteMode::Queue);
  now = run_epoch(r, t, now, 64, microseconds(50000), 100);
  CHECK(r.mode == RouteMode::Direct && r.chosen == RouteMode::Direct && r.interval == 4 && r.switches == 1);
  for (int e = 0; e < 4; ++e) now = run_epoch(r, t, now, 128, microseconds(50000), 100);
  CHECK(r.probing && r.mode == RouteMode::Queue);
  now = run_epoch(r, t, now, 64, microseconds(50000), 100);
  CHECK(r.interval == 8);  // ... up to max_interval
  for (int e = 0; e < 8; ++e) now = run_epoch(r, t, now, 128, microseconds(50000), 100);
  CHECK(r.probing && r.mode == RouteMode::Queue);
  // Same throughput (an open-loop load both keep up with): the lower latency wins.
  now = run_epoch(r, t, now, 128, microseconds(50000), 20);
  CHECK(r.chosen == RouteMode::Queue && r.switches == 2 && r.interval == 2);

  // After a switch the new mode counts only once the old mode's requests are done.
  RouteLearner s;
  now = Clock::now();
  route_start(s, t, now);
  route_admit(s, RouteMode::Queue);  // a straggler
  now = run_epoch(s, t, now, 64, microseconds(50000), 100);
  CHECK(s.mode == RouteMode::Direct && !s.settled);
  route_admit(s, RouteMode::Direct);
  CHECK(!route_finish(s, t, RouteMode::Direct, 100, now + microseconds(10)));
  CHECK(!s.settled && s.done == 0);
  CHECK(!route_finish(s, t, RouteMode::Queue, 5000, now + microseconds(20)));
  CHECK(s.settled && s.epoch_start == now + microseconds(20));

  // A slow model ends its epoch at max_epoch with a few requests.
  RouteLearner slow;
  now = Clock::now();
  route_start(slow, t, now);
  now = run_epoch(slow, t, now, 4, microseconds(1000000), 250000);
  CHECK(slow.epochs == 1);

  // Comparing epochs: throughput beyond its margin, then latency, else a tie.
  RouteEpoch a{1000, 500, 64}, b{1100, 500, 64};
  CHECK(route_compare(t, a, b) == 1 && route_compare(t, b, a) == -1);
  b = {1020, 400, 64};
  CHECK(route_compare(t, a, b) == 1);
  b = {1020, 490, 64};
  CHECK(route_compare(t, a, b) == 0);
  CHECK(route_compare(t, a, RouteEpoch{}) == -1 && route_compare(t, RouteEpoch{}, a) == 1);
  CHECK(std::string(to_string(RouteMode::Direct)) == "direct");
  CHECK(std::string(to_string(Dispatch::Direct)) == "direct");
}

}  // namespace

int main() {
  test_batchability();
  test_decide();
  test_cost_model();
  test_cap_and_share();
  test_decide_adaptive();
  test_caps();
  test_admits();
  test_validate_and_deadline();
  test_route_learner();
  return fastort_test::report("test_batch_policy");
}
