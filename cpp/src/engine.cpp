#include "fastort/engine.h"

#include "fastort/errors.h"

namespace fastort {

std::shared_ptr<Engine> Engine::open(const ModelSource& source, const EngineConfig& config,
                                     const std::vector<std::pair<std::string, TensorView>>& initializers,
                                     std::shared_ptr<void> keepalive) {
  auto pool = SessionPool::open(source, config.session, config.replicas, config.share_weights, initializers,
                                std::move(keepalive));
  pool->set_limits(config.limits);
  return std::make_shared<Engine>(std::move(pool));
}

Engine::Engine(std::shared_ptr<SessionPool> pool) : pool_(std::move(pool)) {}

Engine::~Engine() {
  if (batcher_) batcher_->close(true);
}

void Engine::start_queue(const BatchConfig& config, bool route_runs) {
  if (batcher_) throw Error("the batcher is already running");
  batcher_ = std::make_unique<Batcher>(pool_, config);
  route_runs_ = route_runs;
}

bool Engine::batching() const noexcept {
  return batcher_ && batcher_->batching() && batcher_->options().max_batch_size > 1;
}

std::string Engine::unbatchable_reason() const { return batcher_ ? batcher_->unbatchable_reason() : ""; }

std::vector<std::string> Engine::replica_providers() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < pool_->size(); ++i) out.push_back(pool_->replica(i).provider_names());
  return out;
}

bool Engine::on_host(const std::vector<TensorView>& inputs) noexcept {
  for (const auto& v : inputs)
    if (!v.device.is_cpu()) return false;
  return true;
}

Engine::Route Engine::route(bool has_out, const std::vector<TensorView>& inputs) const noexcept {
  return route_runs_ && batcher_ && !has_out && on_host(inputs) ? Route::Queue : Route::Direct;
}

uint64_t Engine::submit(Request request, bool run_here) {
  if (!batcher_) throw Error("this engine has no request queue (internal: start_queue was not called)");
  return batcher_->submit(std::move(request), run_here);
}

bool Engine::cancel(uint64_t id) { return batcher_ && batcher_->cancel(id); }

void Engine::close(bool drain) {
  if (batcher_) batcher_->close(drain);
}

BatcherStats Engine::stats() const { return batcher_ ? batcher_->stats() : BatcherStats{}; }

void Engine::reset_stats() {
  if (batcher_) batcher_->reset_stats();
}

Engine::InlineClaim& Engine::InlineClaim::operator=(InlineClaim&& o) noexcept {
  if (this != &o) {
    release();
    batcher_ = o.batcher_;
    replica_ = o.replica_;
    rows_ = o.rows_;
    started_ = o.started_;
    ok_ = o.ok_;
    o.batcher_ = nullptr;
  }
  return *this;
}

Engine::InlineClaim::~InlineClaim() { release(); }

void Engine::InlineClaim::end() noexcept {
  ok_ = true;
  release();
}

void Engine::InlineClaim::release() noexcept {
  if (batcher_) batcher_->end_inline(replica_, rows_, started_, ok_);
  batcher_ = nullptr;
}

Engine::InlineClaim Engine::claim_inline(const std::vector<TensorView>& inputs, int priority,
                                         Clock::time_point deadline) {
  if (!batcher_ || !route_runs_) return {};
  const size_t rows = batcher_->rows_of(inputs);
  const size_t replica = batcher_->begin_inline(rows, priority, deadline);
  if (replica == Batcher::kNoReplica) return {};
  return InlineClaim(batcher_.get(), replica, rows);
}

bool Engine::run_guessed(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                         const std::vector<TensorView>& out, size_t replica) const {
  try {
    pool_->run(inputs, outputs, out, replica);
    return true;
  } catch (const Error&) {  // maybe a wrong guess: the caller runs again
    guess_->miss();
    return false;
  }
}

}  // namespace fastort
