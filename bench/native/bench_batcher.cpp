// Pool + dynamic batcher driven from C++, no Python: closed-loop clients.
//
//   fastort_bench_batcher MODEL --lib PATH [--replicas 2] [--max-batch 32]
//       [--max-delay-us 2000] [--clients 1,4,16,64] [--seconds 3] [--intra-threads 1]
//
// Each client thread sends a batch-1 request, waits for its result, and sends
// the next, for --seconds per client count. Prints one JSON line per count:
// throughput (samples/s) and latency p50/p99 (µs). The model's first input must
// be float32 [batch, D].
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "batcher.h"
#include "runtime.h"

namespace {

struct Args {
  std::string model, lib;
  size_t replicas = 2, max_batch = 32;
  int64_t max_delay_us = 2000;
  std::vector<int> clients{1, 4, 16, 64};
  double seconds = 3.0;
  int intra_threads = 1;
};

Args parse(int argc, char** argv) {
  Args a;
  if (const char* env = std::getenv("FASTORT_ORT_LIBRARY")) a.lib = env;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + k);
      return argv[++i];
    };
    if (k == "--lib") a.lib = next();
    else if (k == "--replicas") a.replicas = std::stoul(next());
    else if (k == "--max-batch") a.max_batch = std::stoul(next());
    else if (k == "--max-delay-us") a.max_delay_us = std::stoll(next());
    else if (k == "--seconds") a.seconds = std::stod(next());
    else if (k == "--intra-threads") a.intra_threads = std::stoi(next());
    else if (k == "--clients") {
      a.clients.clear();
      std::stringstream ss(next());
      for (std::string item; std::getline(ss, item, ',');) a.clients.push_back(std::stoi(item));
    } else if (!k.empty() && k[0] != '-') a.model = k;
    else throw std::runtime_error("unknown argument " + k);
  }
  if (a.model.empty() || a.lib.empty())
    throw std::runtime_error("usage: fastort_bench_batcher MODEL --lib libonnxruntime.so [options]");
  return a;
}

// One client's request slot: the input row and a flag the batcher's callback sets.
struct Slot {
  std::vector<float> input;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  bool failed = false;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    fastort::Runtime::load(args.lib);
    fastort::SessionOptions options;
    options.intra_op_threads = args.intra_threads;
    fastort::ModelSource source;
    source.path = args.model;
    auto pool = fastort::SessionPool::open(source, options, args.replicas);
    const fastort::IOInfo& in = pool->front().inputs().at(0);
    if (in.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || in.shape.size() != 2 || in.shape[1] < 0)
      throw std::runtime_error("the model's first input must be float32 [batch, D]");
    const int64_t dim = in.shape[1];

    fastort::BatcherOptions bo;
    bo.max_batch_size = args.max_batch;
    bo.max_delay = std::chrono::microseconds(args.max_delay_us);
    bo.max_queue_requests = 0;
    fastort::Batcher batcher(pool, bo);

    for (int n_clients : args.clients) {
      std::vector<std::unique_ptr<Slot>> slots;
      for (int c = 0; c < n_clients; ++c) {
        auto slot = std::make_unique<Slot>();
        slot->input.assign(static_cast<size_t>(dim), 0.01f * static_cast<float>(c + 1));
        slots.push_back(std::move(slot));
      }
      std::atomic<bool> stop{false};
      std::atomic<int> failures{0};
      std::vector<std::vector<double>> latencies(static_cast<size_t>(n_clients));
      std::vector<std::thread> threads;
      batcher.reset_stats();
      const auto start = std::chrono::steady_clock::now();
      for (int c = 0; c < n_clients; ++c) {
        threads.emplace_back([&, c] {
          Slot& slot = *slots[static_cast<size_t>(c)];
          auto& lat = latencies[static_cast<size_t>(c)];
          while (!stop.load(std::memory_order_relaxed)) {
            fastort::Request request;
            fastort::TensorView view;
            view.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
            view.data = slot.input.data();
            view.shape = {1, dim};
            request.inputs = {view};
            slot.done = false;
            request.done = [&slot](fastort::Outcome&& outcome) {
              std::lock_guard<std::mutex> lock(slot.mu);
              slot.failed = static_cast<bool>(outcome.error);
              slot.done = true;
              slot.cv.notify_one();
            };
            const auto t0 = std::chrono::steady_clock::now();
            batcher.submit(std::move(request));
            std::unique_lock<std::mutex> lock(slot.mu);
            slot.cv.wait(lock, [&] { return slot.done; });
            if (slot.failed) {
              failures.fetch_add(1);
              return;
            }
            lat.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
          }
        });
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(args.seconds));
      stop = true;
      for (auto& t : threads) t.join();
      if (failures.load() > 0) throw std::runtime_error("requests failed");
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::vector<double> all;
      for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
      std::sort(all.begin(), all.end());
      const fastort::BatcherStats stats = batcher.stats();
      const double mean_batch = stats.batches ? static_cast<double>(stats.rows) / static_cast<double>(stats.batches) : 0;
      std::printf("{\"clients\": %d, \"samples_per_s\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"mean_batch\": %.2f}\n",
                  n_clients, static_cast<double>(all.size()) / elapsed, all.empty() ? 0.0 : all[all.size() / 2],
                  all.empty() ? 0.0 : all[all.size() * 99 / 100], mean_batch);
      std::fflush(stdout);
    }
    batcher.close(true);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fastort_bench_batcher: " << e.what() << "\n";
    return 1;
  }
}
