#include "fastort/batcher.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "fastort/errors.h"

namespace fastort {
namespace {

constexpr size_t kLatencyWindow = 65536;
constexpr int64_t kPadded = -2;  // marks a padded dim in a request's signature

size_t item_size(ElementType type) {
  return type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING ? sizeof(std::string_view) : element_size(type);
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape, size_t item) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = static_cast<int64_t>(item);
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

// Copies a dense block of shape `src_shape` into a dense array of shape
// `dst_shape` (each dim at least as large) at `dst`.
void copy_block(unsigned char* dst, const int64_t* dst_shape, const unsigned char* src, const int64_t* src_shape,
                size_t rank, size_t item) {
  if (rank == 0) {
    std::memcpy(dst, src, item);
    return;
  }
  size_t dst_inner = item, src_inner = item;
  bool same = true;
  for (size_t d = 1; d < rank; ++d) {
    dst_inner *= static_cast<size_t>(dst_shape[d]);
    src_inner *= static_cast<size_t>(src_shape[d]);
    same = same && dst_shape[d] == src_shape[d];
  }
  if (same) {
    std::memcpy(dst, src, static_cast<size_t>(src_shape[0]) * src_inner);
    return;
  }
  for (int64_t r = 0; r < src_shape[0]; ++r)
    copy_block(dst + r * dst_inner, dst_shape + 1, src + r * src_inner, src_shape + 1, rank - 1, item);
}

// Fills `count` elements of `type` at `dst` with `value`.
void fill_value(unsigned char* dst, size_t count, ElementType type, double value) {
  unsigned char one[16] = {};
  switch (type) {
#define FASTORT_FILL(ENUM, CTYPE)                 \
  case ENUM: {                                   \
    CTYPE v = static_cast<CTYPE>(value);         \
    std::memcpy(one, &v, sizeof v);              \
    break;                                       \
  }
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, float)
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, double)
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, int8_t)
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16, int16_t)
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, int32_t)
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, int64_t)
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, uint8_t)
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16, uint16_t)
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32, uint32_t)
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64, uint64_t)
    FASTORT_FILL(ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, bool)
#undef FASTORT_FILL
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: {
      uint16_t bits = Ort::Float16_t(static_cast<float>(value)).val;
      std::memcpy(one, &bits, 2);
      break;
    }
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: {
      uint16_t bits = Ort::BFloat16_t(static_cast<float>(value)).val;
      std::memcpy(one, &bits, 2);
      break;
    }
    default:
      if (value != 0.0)
        throw InvalidInputError(std::string("padding ") + element_type_name(type) +
                                " inputs supports only a pad value of 0");
  }
  const size_t item = element_size(type);
  bool zero = true;
  for (size_t b = 0; b < item; ++b) zero = zero && one[b] == 0;
  if (zero) {
    std::memset(dst, 0, count * item);
    return;
  }
  for (size_t i = 0; i < count; ++i) std::memcpy(dst + i * item, one, item);
}

}  // namespace

struct Batcher::Pending {
  Request req;
  uint64_t id = 0;
  int64_t rows = 0;
  std::vector<int64_t> signature;
  Clock::time_point enqueued, dispatched;
  bool waiter = false;  // a caller waits for it (counted by the route learner)
};

struct Batcher::Worker {
  std::vector<std::vector<unsigned char>> buffers;       // per input: the batch buffer, reused
  std::vector<std::vector<std::string_view>> strings;    // per input: string batches
};

Batcher::Batcher(std::shared_ptr<SessionPool> pool, BatchConfig options)
    : pool_(std::move(pool)), options_(std::move(options)) {
  validate(options_);
  const Session& s = pool_->front();
  const auto& ins = s.inputs();
  const auto& outs = s.outputs();
  const size_t axis = options_.batch_axis;
  const Batchability verdict = batchability(ins, outs, axis);
  batchable_ = verdict.ok;
  unbatchable_reason_ = verdict.reason;

  linked_output_dims_.resize(outs.size());
  for (const auto& pad : options_.padding) {
    if (pad.input >= ins.size()) throw InvalidInputError("padding names input #" + std::to_string(pad.input) + ", which does not exist");
    const IOInfo& io = ins[pad.input];
    if (!io.has_shape || pad.dim >= io.shape.size() || pad.dim == axis || io.shape[pad.dim] >= 0)
      throw InvalidInputError("input '" + io.name + "' cannot be padded along dim " + std::to_string(pad.dim) +
                              " (shape " + io.shape_string() + "): pick a dynamic dim other than the batch axis");
    if (io.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
      unsigned char probe[16];
      fill_value(probe, 1, io.type, pad.value);  // throws for a pad value the type cannot take
    }
    const std::string& name = io.dim_names[pad.dim];
    for (size_t o = 0; o < outs.size(); ++o) {
      linked_output_dims_[o].resize(outs[o].dim_names.size());
      for (size_t d = 0; d < outs[o].dim_names.size(); ++d)
        if (!name.empty() && outs[o].dim_names[d] == name) linked_output_dims_[o][d] = name;
    }
  }

  // The route is learned where both routes serve the caller alike: batches
  // can form, and no priorities order the queue (a direct run would skip them).
  learn_route_ = options_.adaptive && batchable_ && options_.max_batch_size > 1 && options_.priority_levels == 1;
  if (learn_route_) route_start(route_, route_timing_, Clock::now());
  queues_.resize(static_cast<size_t>(options_.priority_levels));
  busy_.assign(pool_->size(), 0);
  latencies_us_.reserve(kLatencyWindow);
  stats_since_ = Clock::now();
  counters_.batch_rows_histogram.assign(options_.max_batch_size + 2, 0);
  for (size_t i = 0; i < pool_->size(); ++i) {
    auto w = std::make_unique<Worker>();
    w->buffers.resize(ins.size());
    w->strings.resize(ins.size());
    workers_.push_back(std::move(w));
  }
  for (size_t i = 0; i < pool_->size(); ++i) threads_.emplace_back([this, i] { worker_loop(i); });
}

Batcher::~Batcher() { close(true); }

uint64_t Batcher::submit(Request request, bool run_here) {
  const Session& s = pool_->front();
  const auto& ins = s.inputs();
  if (request.inputs.size() != ins.size())
    throw InvalidInputError("the model takes " + std::to_string(ins.size()) + " inputs, got " +
                            std::to_string(request.inputs.size()));
  if (request.priority < 0 || request.priority >= options_.priority_levels)
    throw InvalidInputError("priority must be in [0, " + std::to_string(options_.priority_levels - 1) + "], got " +
                            std::to_string(request.priority));
  pool_->check_limits(request.inputs);
  auto p = std::make_shared<Pending>();
  const size_t axis = options_.batch_axis;
  for (size_t i = 0; i < ins.size(); ++i) {
    const TensorView& v = request.inputs[i];
    if (!v.device.is_cpu())
      throw InvalidInputError("input '" + ins[i].name + "' is on " + v.device.str() +
                              ": the request queue takes host arrays (device inputs run unbatched through run())");
    s.check_input(i, v);
    checked_element_count(v.shape, item_size(v.type), "input '" + ins[i].name + "'");
    p->signature.push_back(static_cast<int64_t>(v.type));
    p->signature.push_back(static_cast<int64_t>(v.shape.size()));
    for (size_t d = 0; d < v.shape.size(); ++d) {
      bool padded = false;
      for (const auto& pad : options_.padding) padded = padded || (pad.input == i && pad.dim == d);
      p->signature.push_back(d == axis ? 0 : padded ? kPadded : v.shape[d]);
    }
  }
  if (batchable_) {
    p->rows = request.inputs[0].shape[axis];
    for (size_t i = 1; i < ins.size(); ++i)
      if (request.inputs[i].shape[axis] != p->rows)
        throw InvalidInputError("inputs disagree on the number of rows along the batch axis: '" + ins[0].name +
                                "' has " + std::to_string(p->rows) + ", '" + ins[i].name + "' has " +
                                std::to_string(request.inputs[i].shape[axis]));
  } else {
    p->rows = 1;
  }
  p->req = std::move(request);
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (closing_) throw ClosedError("the engine is closed: no new requests are accepted");
    const size_t rows = static_cast<size_t>(p->rows);
    if (!admits(options_, queued_requests_, queued_rows_, rows)) {
      ++counters_.rejected;
      throw QueueFullError("the request queue is full (" + std::to_string(queued_requests_) + " requests, " +
                           std::to_string(queued_rows_) + " rows queued; max_queue=" +
                           std::to_string(options_.max_queue_requests) + " requests" +
                           (options_.max_queue_rows ? ", " + std::to_string(options_.max_queue_rows) + " rows" : "") +
                           "): retry later or raise max_queue");
    }
    p->id = next_id_++;
    p->enqueued = Clock::now();
    observe_arrival(costs_, rows, p->enqueued);
    if (run_here && learn_route_) {
      p->waiter = true;
      route_admit(route_, RouteMode::Queue);
    }
    if (run_here && options_.adaptive && queued_requests_ == 0 && in_flight_ == 0 && p->req.deadline > p->enqueued) {
      size_t replica = busy_.size();
      for (size_t r = 0; r < busy_.size() && replica == busy_.size(); ++r)
        if (!busy_[r]) replica = r;
      if (replica < busy_.size()) {
        busy_[replica] = 1;
        ++in_flight_;
        ++counters_.dispatch[static_cast<size_t>(Dispatch::Inline)];
        p->dispatched = p->enqueued;
        lock.unlock();
        std::vector<PendingPtr> batch{std::move(p)};
        run_batch(replica, batch);
        batch.clear();
        lock.lock();
        busy_[replica] = 0;
        --in_flight_;
        lock.unlock();
        cv_.notify_all();
        return 0;
      }
    }
    queues_[static_cast<size_t>(p->req.priority)].push_back(p);
    ++queued_requests_;
    queued_rows_ += rows;
  }
  cv_.notify_all();
  return p->id;
}

void Batcher::record_latency(double us) {
  if (latencies_us_.size() < kLatencyWindow) {
    latencies_us_.push_back(us);
  } else {
    latencies_us_[latency_next_] = us;
    latency_next_ = (latency_next_ + 1) % kLatencyWindow;
  }
}

size_t Batcher::rows_of(const std::vector<TensorView>& inputs) const noexcept {
  const size_t axis = options_.batch_axis;
  if (!batchable_ || inputs.empty() || inputs[0].shape.size() <= axis || inputs[0].shape[axis] < 0) return 1;
  return static_cast<size_t>(inputs[0].shape[axis]);
}

size_t Batcher::begin_inline(size_t rows, int priority, Clock::time_point deadline) {
  if (priority < 0 || priority >= options_.priority_levels)
    throw InvalidInputError("priority must be in [0, " + std::to_string(options_.priority_levels - 1) + "], got " +
                            std::to_string(priority));
  if (!options_.adaptive) return kNoReplica;
  std::lock_guard<std::mutex> lock(mu_);
  if (closing_) throw ClosedError("the engine is closed: no new requests are accepted");
  const Clock::time_point now = Clock::now();
  if (deadline <= now || !admits(options_, 0, 0, rows)) return kNoReplica;
  if (learn_route_ && route_.mode == RouteMode::Direct) {
    observe_arrival(costs_, rows, now);
    route_admit(route_, RouteMode::Direct);
    ++counters_.dispatch[static_cast<size_t>(Dispatch::Direct)];
    return kDirect;
  }
  if (queued_requests_ != 0 || in_flight_ != 0) return kNoReplica;
  size_t replica = kNoReplica;
  for (size_t r = 0; r < busy_.size() && replica == kNoReplica; ++r)
    if (!busy_[r]) replica = r;
  if (replica == kNoReplica) return kNoReplica;
  observe_arrival(costs_, rows, now);
  if (learn_route_) route_admit(route_, RouteMode::Queue);
  busy_[replica] = 1;
  ++in_flight_;
  ++counters_.dispatch[static_cast<size_t>(Dispatch::Inline)];
  return replica;
}

void Batcher::end_inline(size_t replica, size_t rows, Clock::time_point started, bool ok) noexcept {
  const Clock::time_point end = Clock::now();
  const double us = std::chrono::duration<double, std::micro>(end - started).count();
  const bool direct = replica == kDirect;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (learn_route_) route_finish(route_, route_timing_, direct ? RouteMode::Direct : RouteMode::Queue, us, end);
    if (!direct) {
      // Workers only need the freed replica for requests queued meanwhile (or to
      // finish closing): a lone caller does not pay a futex wake per run.
      wake = queued_requests_ > 0 || closing_;
      busy_[replica] = 0;
      --in_flight_;
    }
    ++counters_.batches;  // a run of its own
    auto& hist = counters_.batch_rows_histogram;
    ++hist[std::min(rows, hist.size() - 1)];
    ++counters_.requests;
    counters_.run_us_total += us;
    if (ok) {
      counters_.rows += rows;
      // Direct runs overlap each other: their times are not a batch's cost.
      if (!direct) observe_run(costs_, rows, us);
      try {
        record_latency(us);
      } catch (...) {  // out of memory for the ring: the sample is dropped
      }
    } else {
      ++counters_.failed;
    }
  }
  if (wake) cv_.notify_all();
}

bool Batcher::cancel(uint64_t id) {
  PendingPtr removed;  // released after the lock (see finish)
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& q : queues_) {
    for (auto it = q.begin(); it != q.end(); ++it) {
      if ((*it)->id == id) {
        --queued_requests_;
        queued_rows_ -= static_cast<size_t>((*it)->rows);
        ++counters_.cancelled;
        removed = std::move(*it);
        q.erase(it);
        return true;
      }
    }
  }
  return false;
}

void Batcher::close(bool drain) {
  std::call_once(closed_once_, [&] {
    std::vector<PendingPtr> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
      drain_ = drain;
      if (!drain) {
        for (auto& q : queues_) {
          for (auto& p : q) dropped.push_back(p);
          q.clear();
        }
        queued_requests_ = queued_rows_ = 0;
      }
    }
    cv_.notify_all();
    for (auto& p : dropped)
      finish(*p, Outcome{std::make_exception_ptr(ClosedError("the engine was closed before this request ran")), {}},
             false);
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  });
}

void Batcher::take_expired(Clock::time_point now, std::vector<PendingPtr>& expired) {
  for (auto& q : queues_) {
    for (auto it = q.begin(); it != q.end();) {
      if ((*it)->req.deadline <= now) {
        --queued_requests_;
        queued_rows_ -= static_cast<size_t>((*it)->rows);
        expired.push_back(*it);
        it = q.erase(it);
      } else {
        ++it;
      }
    }
  }
}

Dispatch Batcher::ready(Clock::time_point now, Clock::time_point& wake) const {
  wake = Clock::time_point::max();
  const Pending* anchor = nullptr;
  for (const auto& q : queues_) {
    if (!q.empty()) {
      anchor = q.front().get();
      break;
    }
  }
  if (anchor == nullptr) return Dispatch::Wait;
  QueueState state{closing_, in_flight_, batchable_, anchor->enqueued, 0, pool_->size(),
                   options_.adaptive ? &costs_ : nullptr};
  Decision decision = decide(options_, state, now);
  if (decision.what == Dispatch::Wait || decision.what == Dispatch::Free) {  // the rows that may join the head's batch decide
    for (const auto& q : queues_) {
      for (const auto& p : q) {
        if (p->signature == anchor->signature) state.rows_like_oldest += static_cast<size_t>(p->rows);
        if (p->req.deadline < wake) wake = p->req.deadline;
      }
    }
    decision = decide(options_, state, now);
  }
  if (decision.dispatch()) return decision.what;
  wake = std::min(wake, decision.wake);
  return Dispatch::Wait;
}

std::vector<Batcher::PendingPtr> Batcher::take_batch(Clock::time_point) {
  std::vector<PendingPtr> batch;
  size_t level = 0;
  while (level < queues_.size() && queues_[level].empty()) ++level;
  if (level == queues_.size()) return batch;
  PendingPtr anchor = queues_[level].front();
  queues_[level].pop_front();
  batch.push_back(anchor);
  size_t rows = static_cast<size_t>(anchor->rows);
  // The learned cap, and an even share of the queue when other workers are free.
  const size_t free_workers = pool_->size() > in_flight_ ? pool_->size() - in_flight_ : 1;
  const size_t limit = take_rows(options_, options_.adaptive ? &costs_ : nullptr, queued_rows_, free_workers);
  const bool alone = !batchable_ || rows == 0 || rows >= limit;
  for (size_t l = level; !alone && l < queues_.size() && rows < limit; ++l) {
    auto& q = queues_[l];
    for (auto it = q.begin(); it != q.end() && rows < limit;) {
      const Pending& p = **it;
      if (p.signature == anchor->signature && p.rows > 0 && rows + static_cast<size_t>(p.rows) <= limit) {
        rows += static_cast<size_t>(p.rows);
        batch.push_back(*it);
        it = q.erase(it);
      } else {
        ++it;
      }
    }
  }
  const Clock::time_point now = Clock::now();
  for (const auto& p : batch) {
    p->dispatched = now;
    --queued_requests_;
    queued_rows_ -= static_cast<size_t>(p->rows);
  }
  return batch;
}

void Batcher::worker_loop(size_t replica) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    std::vector<PendingPtr> expired;
    take_expired(Clock::now(), expired);
    if (!expired.empty()) {
      lock.unlock();
      for (auto& p : expired)
        finish(*p, Outcome{std::make_exception_ptr(TimeoutError("the request's deadline passed before it could run")), {}},
               false);
      expired.clear();
      lock.lock();
      continue;
    }
    if (queued_requests_ == 0) {
      if (closing_) break;
      cv_.wait(lock);
      continue;
    }
    if (busy_[replica]) {  // a caller runs a request on this replica (submit's run_here)
      cv_.wait(lock);
      continue;
    }
    Clock::time_point wake;
    const Dispatch why = ready(Clock::now(), wake);
    if (why == Dispatch::Wait) {
      cv_.wait_until(lock, wake);
      continue;
    }
    ++counters_.dispatch[static_cast<size_t>(why)];
    std::vector<PendingPtr> batch = take_batch(Clock::now());
    ++in_flight_;
    busy_[replica] = 1;
    lock.unlock();
    run_batch(replica, batch);
    batch.clear();  // release the requests before taking the lock (see finish)
    lock.lock();
    busy_[replica] = 0;
    --in_flight_;
    cv_.notify_all();
  }
}

void Batcher::run_batch(size_t replica, std::vector<PendingPtr>& batch) {
  Worker& worker = *workers_[replica];
  const Session& session = pool_->replica(replica);
  const auto& ins = session.inputs();
  const auto& outs = session.outputs();
  const size_t axis = options_.batch_axis;
  std::vector<Outcome> outcomes(batch.size());
  const Clock::time_point started = Clock::now();
  bool merged_failed = false;
  // Alone: the caller's buffers go to onnxruntime as they are, outputs whole.
  auto run_alone = [&session](const Pending& p, Outcome& outcome) {
    auto values = std::make_shared<std::vector<Ort::Value>>(session.run(p.req.inputs));
    for (auto& v : *values) {
      OutputSlice slice;
      slice.owner = values;
      slice.value = &v;
      outcome.outputs.push_back(std::move(slice));
    }
  };
  try {
    if (batch.size() == 1) {
      run_alone(*batch[0], outcomes[0]);
    } else {
      int64_t total = 0;
      for (const auto& p : batch) total += p->rows;
      std::vector<TensorView> views(ins.size());
      for (size_t i = 0; i < ins.size(); ++i) {
        const TensorView& first = batch[0]->req.inputs[i];
        TensorView& v = views[i];
        v.type = first.type;
        v.shape = first.shape;
        v.shape[axis] = total;
        bool padded = false;
        double pad_value = 0.0;
        for (const auto& pad : options_.padding) {
          if (pad.input != i) continue;
          padded = true;
          pad_value = pad.value;
          for (const auto& p : batch) v.shape[pad.dim] = std::max(v.shape[pad.dim], p->req.inputs[i].shape[pad.dim]);
        }
        const size_t item = item_size(v.type);
        const size_t count = checked_element_count(v.shape, item, "batch input '" + ins[i].name + "'");
        unsigned char* dst;
        if (v.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
          worker.strings[i].assign(count, std::string_view());
          dst = reinterpret_cast<unsigned char*>(worker.strings[i].data());
          v.strings = worker.strings[i].data();
        } else {
          auto& buf = worker.buffers[i];
          if (buf.size() < count * item) buf.resize(count * item);
          dst = buf.data();
          v.data = dst;
          if (padded) fill_value(dst, count, v.type, pad_value);
        }
        const int64_t row_stride = contiguous_strides(v.shape, item)[axis];
        int64_t offset = 0;
        for (const auto& p : batch) {
          const TensorView& src = p->req.inputs[i];
          const auto* src_bytes = src.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING
                                      ? reinterpret_cast<const unsigned char*>(src.strings)
                                      : static_cast<const unsigned char*>(src.data);
          if (p->rows > 0 && src_bytes != nullptr)
            copy_block(dst + offset * row_stride, v.shape.data(), src_bytes, src.shape.data(), v.shape.size(), item);
          offset += p->rows;
        }
      }
      auto values = std::make_shared<std::vector<Ort::Value>>(session.run(views));
      for (size_t o = 0; o < values->size(); ++o) {
        Ort::Value& value = (*values)[o];
        if (!value.IsTensor()) throw RunError("output '" + outs[o].name + "' is not a tensor and cannot be split");
        TensorView bv = view_of(value);
        if (bv.shape.size() <= axis || bv.shape[axis] != total)
          throw RunError("output '" + outs[o].name + "' has shape " + shape_to_string(bv.shape) + ": expected " +
                         std::to_string(total) + " rows along dim " + std::to_string(axis) +
                         " (the model does not keep the batch dim)");
        const bool strings = bv.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
        const auto strides = contiguous_strides(bv.shape, strings ? 1 : element_size(bv.type));
        std::vector<std::string> all = strings ? string_contents(value) : std::vector<std::string>{};
        int64_t offset = 0;
        for (size_t r = 0; r < batch.size(); ++r) {
          const Pending& p = *batch[r];
          OutputSlice slice;
          slice.owner = values;
          slice.view.type = bv.type;
          slice.view.shape = bv.shape;
          slice.view.shape[axis] = p.rows;
          // Dims padded on the way in are cut back to this request's own length.
          const auto& linked = linked_output_dims_[o];
          for (size_t d = 0; d < linked.size() && d < bv.shape.size(); ++d) {
            if (linked[d].empty()) continue;
            for (const auto& pad : options_.padding)
              if (ins[pad.input].dim_names[pad.dim] == linked[d])
                slice.view.shape[d] = std::min(bv.shape[d], p.req.inputs[pad.input].shape[pad.dim]);
          }
          if (strings) {
            slice.is_strings = true;
            // Gather this slice's elements (row-major over its shape) from the batch.
            const size_t n = checked_element_count(slice.view.shape, 1, "output");
            std::vector<int64_t> idx(slice.view.shape.size(), 0);
            for (size_t e = 0; e < n; ++e) {
              int64_t flat = offset * strides[axis];
              for (size_t d = 0; d < idx.size(); ++d) flat += idx[d] * strides[d];
              slice.strings.push_back(all[static_cast<size_t>(flat)]);
              for (size_t d = idx.size(); d-- > 0;) {
                if (++idx[d] < slice.view.shape[d]) break;
                idx[d] = 0;
              }
            }
          } else {
            slice.view.data = static_cast<unsigned char*>(bv.data) + offset * strides[axis];
            slice.strides = strides;
          }
          offset += p.rows;
          outcomes[r].outputs.push_back(std::move(slice));
        }
      }
    }
  } catch (...) {
    if (batch.size() == 1) {
      outcomes[0] = Outcome{std::current_exception(), {}};
    } else {
      // A merged batch failed (one request's values may make the model fail):
      // each request runs again alone, so that only the one at fault fails.
      merged_failed = true;
      for (size_t r = 0; r < batch.size(); ++r) {
        outcomes[r] = Outcome{};
        try {
          run_alone(*batch[r], outcomes[r]);
        } catch (...) {
          outcomes[r] = Outcome{std::current_exception(), {}};
        }
      }
    }
  }
  const double took_us = std::chrono::duration<double, std::micro>(Clock::now() - started).count();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++counters_.batches;
    size_t rows = 0;
    for (const auto& p : batch) rows += static_cast<size_t>(p->rows);
    if (!merged_failed && !outcomes[0].error) observe_run(costs_, rows, took_us);
    auto& hist = counters_.batch_rows_histogram;
    ++hist[std::min(rows, hist.size() - 1)];
  }
  for (size_t r = 0; r < batch.size(); ++r) {
    const bool ok = !outcomes[r].error;
    finish(*batch[r], std::move(outcomes[r]), ok);
  }
}

void Batcher::finish(Pending& p, Outcome&& outcome, bool ok) {
  const Clock::time_point end = Clock::now();
  const double us = std::chrono::duration<double, std::micro>(end - p.enqueued).count();
  const bool ran = p.dispatched != Clock::time_point{};
  outcome.queue_us = std::chrono::duration<double, std::micro>((ran ? p.dispatched : end) - p.enqueued).count();
  outcome.run_us = ran ? std::chrono::duration<double, std::micro>(end - p.dispatched).count() : 0.0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++counters_.requests;
    if (p.waiter) route_finish(route_, route_timing_, RouteMode::Queue, us, end);
    counters_.queue_us_total += outcome.queue_us;
    counters_.run_us_total += outcome.run_us;
    if (ok) {
      counters_.rows += static_cast<uint64_t>(p.rows);
      record_latency(us);
    } else {
      try {
        std::rethrow_exception(outcome.error);
      } catch (const TimeoutError&) {
        ++counters_.timed_out;
      } catch (...) {
        ++counters_.failed;
      }
    }
  }
  // Drop every caller-side reference here, outside the lock: the callback and
  // the keepalive may hold objects whose release needs the caller's runtime
  // (the GIL), which must never be waited for while mu_ is held.
  std::function<void(Outcome&&)> done = std::move(p.req.done);
  p.req.done = nullptr;
  if (done) {
    try {
      done(std::move(outcome));
    } catch (...) {
      // A completion callback must not take the worker down.
    }
  }
  done = nullptr;
  p.req.keepalive.reset();
}

BatcherStats Batcher::stats() const {
  std::vector<double> lat;
  BatcherStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = counters_;
    s.queue_requests = queued_requests_;
    s.queue_rows = queued_rows_;
    s.in_flight_batches = in_flight_;
    s.adaptive = options_.adaptive;
    s.costs = costs_;
    s.learns_route = learn_route_;
    s.route = route_;
    s.batch_cap = batch_cap(options_, options_.adaptive ? &costs_ : nullptr);
    s.elapsed_s = std::chrono::duration<double>(Clock::now() - stats_since_).count();
    lat = latencies_us_;
  }
  if (!lat.empty()) {
    auto pct = [&](double q) {
      const size_t k = std::min(lat.size() - 1, static_cast<size_t>(q * static_cast<double>(lat.size())));
      std::nth_element(lat.begin(), lat.begin() + static_cast<std::ptrdiff_t>(k), lat.end());
      return lat[k];
    };
    s.latency_p50_us = pct(0.50);
    s.latency_p90_us = pct(0.90);
    s.latency_p99_us = pct(0.99);
  }
  return s;
}

void Batcher::reset_stats() {
  std::lock_guard<std::mutex> lock(mu_);
  counters_ = BatcherStats{};
  counters_.batch_rows_histogram.assign(options_.max_batch_size + 2, 0);
  latencies_us_.clear();
  latency_next_ = 0;
  stats_since_ = Clock::now();
}

}  // namespace fastort
