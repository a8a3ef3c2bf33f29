// Pool + dynamic batcher driven from C++, no Python: closed-loop clients.
//
//   fastort_bench_batcher [LIBONNXRUNTIME] MODEL [--lib PATH] [--dim D]
//       [--replicas 2] [--max-batch 32] [--max-delay-us 2000]
//       [--clients 1,4,16,64] [--seconds 3] [--warmup 0.3] [--intra-threads 1]
//       [--global-pool [--global-threads N]] [--config KEY=VALUE ...]
//
// The onnxruntime library is the first of two positional arguments, --lib, or
// $FASTORT_ORT_LIBRARY. Each client thread sends a batch-1 request (a view over
// its own input row), waits for the batcher's callback, and sends the next, for
// --seconds per client count (after --warmup seconds that are not counted).
// Prints one JSON line per client count: throughput (samples/s), latency
// p50/p99 (µs, submit to wake-up) and the mean batch size. The model's first
// input must be float32 [batch, D] (D checked against --dim when given), and
// it must be its only input.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "fastort/batcher.h"
#include "fastort/runtime.h"

namespace {

using SteadyClock = std::chrono::steady_clock;

struct Args {
  std::string model, lib;
  int64_t dim = -1;  // -1: take it from the model
  size_t replicas = 2, max_batch = 32;
  int64_t max_delay_us = 2000;
  std::vector<int> clients{1, 4, 16, 64};
  double seconds = 3.0, warmup = 0.3;
  int intra_threads = 1;
  bool global_pool = false;
  int global_threads = 0;  // 0: one per core
  std::vector<std::pair<std::string, std::string>> config;
};

const char* const kUsage =
    "usage: fastort_bench_batcher [LIBONNXRUNTIME] MODEL [--lib PATH] [--dim D] [--replicas N] [--max-batch N]\n"
    "         [--max-delay-us US] [--clients 1,4,16,64] [--seconds S] [--warmup S] [--intra-threads N]\n"
    "         [--global-pool [--global-threads N]] [--config KEY=VALUE]...\n"
    "  the library may also come from $FASTORT_ORT_LIBRARY";

Args parse(int argc, char** argv) {
  Args a;
  if (const char* env = std::getenv("FASTORT_ORT_LIBRARY")) a.lib = env;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + k);
      return argv[++i];
    };
    if (k == "-h" || k == "--help") {
      std::cout << kUsage << "\n";
      std::exit(0);
    } else if (k == "--lib") a.lib = next();
    else if (k == "--dim") a.dim = std::stoll(next());
    else if (k == "--replicas") a.replicas = std::stoul(next());
    else if (k == "--max-batch") a.max_batch = std::stoul(next());
    else if (k == "--max-delay-us") a.max_delay_us = std::stoll(next());
    else if (k == "--seconds") a.seconds = std::stod(next());
    else if (k == "--warmup") a.warmup = std::stod(next());
    else if (k == "--intra-threads") a.intra_threads = std::stoi(next());
    else if (k == "--global-pool") a.global_pool = true;
    else if (k == "--global-threads") a.global_threads = std::stoi(next());
    else if (k == "--config") {
      const std::string kv = next();
      const auto eq = kv.find('=');
      if (eq == std::string::npos) throw std::runtime_error("--config wants KEY=VALUE, got " + kv);
      a.config.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    } else if (k == "--clients") {
      a.clients.clear();
      std::stringstream ss(next());
      for (std::string item; std::getline(ss, item, ',');)
        if (!item.empty()) a.clients.push_back(std::stoi(item));
    } else if (!k.empty() && k[0] != '-') positional.push_back(k);
    else throw std::runtime_error("unknown argument " + k + "\n" + kUsage);
  }
  if (positional.size() == 2) {
    a.lib = positional[0];
    a.model = positional[1];
  } else if (positional.size() == 1) {
    a.model = positional[0];
  } else {
    throw std::runtime_error(kUsage);
  }
  if (a.lib.empty()) throw std::runtime_error(std::string("no onnxruntime library given\n") + kUsage);
  if (a.replicas == 0 || a.max_batch == 0 || a.seconds <= 0 || a.clients.empty())
    throw std::runtime_error("--replicas, --max-batch, --seconds and --clients must be positive");
  for (int c : a.clients)
    if (c < 1) throw std::runtime_error("client counts must be at least 1");
  return a;
}

// One client: its input row, and the flag the batcher's callback sets.
struct Client {
  std::vector<float> input;
  std::vector<double> latencies_us;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
};

struct Point {
  int clients = 0;
  double samples_per_s = 0, p50_us = 0, p99_us = 0, mean_batch = 0;
  uint64_t samples = 0;
};

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  const size_t k = std::min(sorted.size() - 1, static_cast<size_t>(q * static_cast<double>(sorted.size())));
  return sorted[k];
}

// Runs `n` closed-loop clients against `batcher` for warmup + seconds.
Point run_point(fastort::Batcher& batcher, int n, int64_t dim, double warmup_s, double seconds) {
  std::vector<std::unique_ptr<Client>> clients;
  for (int c = 0; c < n; ++c) {
    auto client = std::make_unique<Client>();
    client->input.assign(static_cast<size_t>(dim), 0.01f * static_cast<float>(c + 1));
    client->latencies_us.reserve(1 << 16);
    clients.push_back(std::move(client));
  }
  std::atomic<bool> measuring{false}, stop{false};
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n));
  for (int c = 0; c < n; ++c) {
    threads.emplace_back([&, c] {
      Client& me = *clients[static_cast<size_t>(c)];
      try {
        while (!stop.load(std::memory_order_relaxed)) {
          fastort::Request request;
          fastort::TensorView view;
          view.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
          view.data = me.input.data();
          view.shape = {1, dim};
          request.inputs.push_back(std::move(view));
          request.done = [&me](fastort::Outcome&& outcome) {
            std::lock_guard<std::mutex> lock(me.mu);
            me.error = outcome.error;
            me.done = true;
            me.cv.notify_one();
            // `outcome` (and with it the batch output the slice points into) is
            // released when this returns; a real caller would read it here.
          };
          const bool counted = measuring.load(std::memory_order_relaxed);
          const auto t0 = SteadyClock::now();
          {
            std::unique_lock<std::mutex> lock(me.mu);
            me.done = false;
          }
          batcher.submit(std::move(request));
          {
            std::unique_lock<std::mutex> lock(me.mu);
            me.cv.wait(lock, [&] { return me.done; });
            if (me.error) std::rethrow_exception(me.error);
          }
          if (counted)
            me.latencies_us.push_back(std::chrono::duration<double, std::micro>(SteadyClock::now() - t0).count());
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(me.mu);
        if (!me.error) me.error = std::current_exception();
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup_s));
  batcher.reset_stats();
  const auto start = SteadyClock::now();
  measuring = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  measuring = false;
  const double elapsed = std::chrono::duration<double>(SteadyClock::now() - start).count();
  const fastort::BatcherStats stats = batcher.stats();
  stop = true;
  for (auto& t : threads) t.join();

  std::vector<double> all;
  for (auto& client : clients) {
    if (client->error) std::rethrow_exception(client->error);
    all.insert(all.end(), client->latencies_us.begin(), client->latencies_us.end());
  }
  std::sort(all.begin(), all.end());
  Point p;
  p.clients = n;
  p.samples = all.size();
  // Requests whose submit fell inside the window, over the window: the tail of
  // requests still in flight when it closes is counted (it was sent in time).
  p.samples_per_s = static_cast<double>(all.size()) / elapsed;
  p.p50_us = percentile(all, 0.50);
  p.p99_us = percentile(all, 0.99);
  p.mean_batch = stats.batches ? static_cast<double>(stats.rows) / static_cast<double>(stats.batches) : 0.0;
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    fastort::Runtime& runtime = fastort::Runtime::load(args.lib);
    fastort::SessionOptions options;
    options.intra_op_threads = args.intra_threads;
    options.use_global_thread_pools = args.global_pool;
    options.config = args.config;
    if (args.global_pool) {
      fastort::GlobalThreadOptions g;
      g.intra_op_threads = args.global_threads;
      runtime.configure_global_threads(g);
    }
    fastort::ModelSource source;
    source.path = args.model;
    auto pool = fastort::SessionPool::open(source, options, args.replicas);
    const auto& inputs = pool->front().inputs();
    const fastort::IOInfo& in = inputs.at(0);
    if (inputs.size() != 1 || in.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || in.shape.size() != 2 ||
        in.shape[1] < 0)
      throw std::runtime_error("the model must have one input, float32 [batch, D] with a fixed D; it has " +
                               std::to_string(inputs.size()) + " inputs, the first " + in.type_string + " " +
                               in.shape_string());
    const int64_t dim = in.shape[1];
    if (args.dim >= 0 && args.dim != dim)
      throw std::runtime_error("--dim " + std::to_string(args.dim) + " but the model's input is " + in.shape_string());

    fastort::BatcherOptions bo;
    bo.max_batch_size = args.max_batch;
    bo.max_delay = std::chrono::microseconds(args.max_delay_us);
    bo.max_queue_requests = 0;  // closed loop: at most one request per client is queued
    fastort::Batcher batcher(pool, bo);
    if (!batcher.batching())
      std::cerr << "fastort_bench_batcher: the model cannot be batched (" << batcher.unbatchable_reason()
                << "): requests run one at a time\n";

    for (int n : args.clients) {
      const Point p = run_point(batcher, n, dim, args.warmup, args.seconds);
      std::printf(
          "{\"clients\": %d, \"samples_per_s\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"mean_batch\": %.2f, "
          "\"samples\": %llu, \"replicas\": %zu, \"intra_threads\": %d, \"global_pool\": %s, \"max_batch\": %zu, "
          "\"max_delay_us\": %lld}\n",
          p.clients, p.samples_per_s, p.p50_us, p.p99_us, p.mean_batch, static_cast<unsigned long long>(p.samples),
          args.replicas, args.intra_threads, args.global_pool ? "true" : "false", args.max_batch,
          static_cast<long long>(args.max_delay_us));
      std::fflush(stdout);
    }
    batcher.close(true);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fastort_bench_batcher: " << e.what() << "\n";
    return 1;
  }
}
