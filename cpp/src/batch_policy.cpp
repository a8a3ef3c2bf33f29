#include "fastort/batch_policy.h"

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
    if (io.kind != ValueKind::Tensor) return no("input '" + io.name + "' is not a tensor");
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

Decision decide(const BatchConfig& config, const QueueState& queue, Clock::time_point now) {
  if (queue.closing) return {Dispatch::Closing};
  if (queue.in_flight == 0) return {Dispatch::Idle};
  if (!queue.batchable) return {Dispatch::Unbatchable};
  const auto due = queue.oldest + config.max_delay;
  if (due <= now) return {Dispatch::Delayed};
  if (queue.rows_like_oldest >= config.max_batch_size) return {Dispatch::Full};
  return {Dispatch::Wait, due};
}

const char* to_string(Dispatch what) noexcept {
  switch (what) {
    case Dispatch::Wait: return "wait";
    case Dispatch::Closing: return "closing";
    case Dispatch::Idle: return "idle";
    case Dispatch::Unbatchable: return "unbatchable";
    case Dispatch::Delayed: return "delayed";
    case Dispatch::Full: return "full";
  }
  return "?";
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
