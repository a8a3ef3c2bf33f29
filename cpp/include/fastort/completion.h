// Handing finished requests back to the caller: a waiter for one synchronous
// request, and a queue of finished asynchronous ones that a caller's thread
// drains (Python: fastort's completion thread resolves futures from it).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <vector>

#include "fastort/batcher.h"

namespace fastort {

// The outcome of one queued request, waited for by the thread that queued it.
class Waiter {
 public:
  // A Request::done callback that completes `waiter`.
  static std::function<void(Outcome&&)> callback(std::shared_ptr<Waiter> waiter) {
    return [waiter = std::move(waiter)](Outcome&& outcome) { waiter->complete(std::move(outcome)); };
  }
  void complete(Outcome&& outcome) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      outcome_ = std::move(outcome);
      done_ = true;
    }
    cv_.notify_all();
  }
  // Waits up to `timeout`; true once the outcome is there.
  bool wait_for(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done_; });
  }
  // The outcome, once wait_for() returned true.
  Outcome& outcome() noexcept { return outcome_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  Outcome outcome_;
};

// Finished requests of type T (the caller's token plus the Outcome), in the
// order they finished.
template <class T>
class CompletionQueue {
 public:
  void push(T&& item) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back(std::move(item));
    }
    cv_.notify_one();
  }
  // Waits up to `timeout` for items and takes them all; `closed` is set once
  // close() was called and everything was handed out.
  std::vector<T> pop(std::chrono::microseconds timeout, bool& closed) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !items_.empty() || closed_; });
    std::vector<T> out(std::make_move_iterator(items_.begin()), std::make_move_iterator(items_.end()));
    items_.clear();
    closed = closed_ && out.empty();
    return out;
  }
  void close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
  bool closed_ = false;
};

}  // namespace fastort
