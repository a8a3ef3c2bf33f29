// The native floor: per-call latency of a model run from C++, no Python.
//
//   fastort_bench_native MODEL [--lib PATH] [--batch N | --shape D0,D1,...]
//                        [--iters N] [--warmup N] [--rounds N] [--threads N] [--diag]
//
// --lib defaults to $FASTORT_ORT_LIBRARY. Measures, side by side on one session,
// in alternating rounds (so that a noisy machine disturbs all methods alike):
//   fastort_core       fastort::Session::run over a caller input buffer, outputs
//                      allocated by onnxruntime (fastort's general path);
//   fastort_core_into  the same with preallocated output buffers: what fastort's
//                      Python run() does for small outputs whose shape it knows;
//   iobinding_floor    plain onnxruntime C++ API, an Ort::IoBinding with input and
//                      outputs bound once, then Run(RunOptions, binding) per call.
// Prints one JSON line of run info, then one JSON line per method:
//   {"method": ..., "median_us": ..., "p99_us": ..., "mean_us": ..., "iters": ...}
// The model must have one float32 input; its dynamic dims take --batch (the
// first) or 1, unless --shape gives the whole shape.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fastort/runtime.h"
#include "fastort/session.h"
#include "fastort/tensor.h"

namespace {

constexpr const char* kUsage =
    "usage: fastort_bench_native MODEL [--lib libonnxruntime.so] [--batch N | --shape D0,D1,...] [--iters N] "
    "[--warmup N] [--rounds N] [--threads N] [--diag]";

struct Args {
  std::string model, lib;
  int64_t batch = 1;
  std::vector<int64_t> shape;  // empty: from the model and --batch
  int iters = 20000, warmup = 2000, rounds = 10, threads = 1;
  bool diag = false;
};

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const int64_t d = std::stoll(item);
    if (d < 0) throw std::runtime_error("--shape: negative dim " + item);
    shape.push_back(d);
  }
  return shape;
}

int positive(const std::string& what, const std::string& text) {
  const int v = std::stoi(text);
  if (v < 1) throw std::runtime_error(what + " must be >= 1, got " + text);
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  if (const char* env = std::getenv("FASTORT_ORT_LIBRARY")) a.lib = env;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + k);
      return argv[++i];
    };
    if (k == "--lib") a.lib = next();
    else if (k == "--batch") a.batch = positive(k, next());
    else if (k == "--shape") a.shape = parse_shape(next());
    else if (k == "--iters") a.iters = positive(k, next());
    else if (k == "--warmup") a.warmup = std::max(0, std::stoi(next()));
    else if (k == "--rounds") a.rounds = positive(k, next());
    else if (k == "--threads") a.threads = std::max(0, std::stoi(next()));
    else if (k == "--diag") a.diag = true;
    else if (k == "-h" || k == "--help") {
      std::cout << kUsage << "\n";
      std::exit(0);
    } else if (!k.empty() && k[0] != '-' && a.model.empty()) a.model = k;
    else throw std::runtime_error("unknown argument " + k);
  }
  if (a.model.empty()) throw std::runtime_error(std::string("no model given; ") + kUsage);
  if (a.lib.empty())
    throw std::runtime_error("no onnxruntime library: pass --lib PATH or set FASTORT_ORT_LIBRARY");
  return a;
}

// One method under test: a name, the call, and its samples in microseconds.
struct Method {
  std::string name;
  std::function<void()> call;
  std::vector<double> us;
};

// Warms every method up, then runs them in `rounds` alternating rounds of
// iters/rounds timed calls each.
void measure(std::vector<Method>& methods, int iters, int warmup, int rounds) {
  for (auto& m : methods)
    for (int i = 0; i < warmup; ++i) m.call();
  const int per_round = std::max(1, iters / rounds);
  for (auto& m : methods) m.us.reserve(static_cast<size_t>(per_round) * static_cast<size_t>(rounds));
  for (int r = 0; r < rounds; ++r) {
    for (auto& m : methods) {
      for (int i = 0; i < per_round; ++i) {
        const auto start = std::chrono::steady_clock::now();
        m.call();
        const auto stop = std::chrono::steady_clock::now();
        m.us.push_back(std::chrono::duration<double, std::micro>(stop - start).count());
      }
    }
  }
}

void report(Method& m) {
  auto& us = m.us;
  const double mean = std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
  std::sort(us.begin(), us.end());
  const size_t n = us.size();
  const double median = n % 2 ? us[n / 2] : 0.5 * (us[n / 2 - 1] + us[n / 2]);
  const size_t p99 = std::min(n - 1, (n * 99 + 99) / 100 - 1);  // nearest rank
  std::printf("{\"method\": \"%s\", \"median_us\": %.3f, \"p99_us\": %.3f, \"mean_us\": %.3f, \"iters\": %zu}\n",
              m.name.c_str(), median, us[p99], mean, n);
}

std::string json_shape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A caller-owned output buffer and the view/value over it.
struct OutputBuffer {
  std::vector<std::byte> bytes;
  fastort::TensorView view;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    fastort::Runtime& runtime = fastort::Runtime::load(args.lib);
    fastort::SessionOptions options;
    options.intra_op_threads = args.threads;
    auto session = fastort::Session::open_file(args.model, options);
    if (session->inputs().size() != 1 || session->inputs()[0].type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      throw std::runtime_error("the model must have exactly one float32 input");
    const fastort::IOInfo& in = session->inputs()[0];

    // The input: one buffer, allocated once, read in place by every method.
    fastort::TensorView view;
    view.type = in.type;
    if (!args.shape.empty()) {
      view.shape = args.shape;
    } else {
      for (size_t d = 0; d < in.shape.size(); ++d)
        view.shape.push_back(in.shape[d] >= 0 ? in.shape[d] : (d == 0 ? args.batch : 1));
    }
    session->check_input(0, view);
    const size_t count = fastort::checked_element_count(view.shape, sizeof(float), "input");
    std::vector<float> input(count);
    for (size_t i = 0; i < count; ++i) input[i] = static_cast<float>(static_cast<int>(i % 17) - 8) * 0.125f;
    view.data = input.data();
    const std::vector<fastort::TensorView> inputs{view};

    // One run to learn the outputs' shapes; preallocate buffers for the tensors.
    auto first = session->run(inputs);
    const auto& outs = session->outputs();
    std::vector<OutputBuffer> buffers(outs.size());
    bool all_tensors = true;
    for (size_t k = 0; k < outs.size(); ++k) {
      if (!first[k].IsTensor() || outs[k].type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING ||
          fastort::element_size(outs[k].type) == 0) {
        all_tensors = false;
        continue;
      }
      fastort::TensorView ov = fastort::view_of(first[k]);
      const size_t item = fastort::element_size(ov.type);
      buffers[k].bytes.resize(std::max<size_t>(1, fastort::checked_element_count(ov.shape, item, "output") * item));
      buffers[k].view.type = ov.type;
      buffers[k].view.shape = ov.shape;
      buffers[k].view.data = buffers[k].bytes.data();
    }
    first.clear();
    std::vector<fastort::TensorView> out_views;
    if (all_tensors)
      for (auto& b : buffers) out_views.push_back(b.view);

    std::printf("{\"info\": {\"onnxruntime\": \"%s\", \"model\": \"%s\", \"input_shape\": %s, \"threads\": %d, "
                "\"rounds\": %d, \"warmup\": %d}}\n",
                runtime.info().version.c_str(), args.model.c_str(), json_shape(view.shape).c_str(), args.threads,
                args.rounds, args.warmup);

    // The floor: onnxruntime's C++ API with input and outputs bound once.
    const OrtMemoryInfo* mem = runtime.cpu_memory();
    Ort::Value in_value =
        Ort::Value::CreateTensor<float>(mem, input.data(), input.size(), view.shape.data(), view.shape.size());
    std::vector<Ort::Value> out_values;
    Ort::IoBinding binding(session->ort());
    binding.BindInput(in.name.c_str(), in_value);
    for (size_t k = 0; k < outs.size(); ++k) {
      if (buffers[k].view.data != nullptr) {
        const auto& b = buffers[k];
        out_values.push_back(Ort::Value::CreateTensor(mem, const_cast<std::byte*>(b.bytes.data()), b.bytes.size(),
                                                      b.view.shape.data(), b.view.shape.size(), b.view.type));
        binding.BindOutput(outs[k].name.c_str(), out_values.back());
      } else {
        binding.BindOutput(outs[k].name.c_str(), mem);
      }
    }
    Ort::RunOptions run_options;

    std::vector<Method> methods;
    methods.push_back({"fastort_core", [&] { auto outputs = session->run(inputs); }, {}});
    if (all_tensors)
      methods.push_back({"fastort_core_into", [&] { auto outputs = session->run(inputs, {}, out_views); }, {}});
    methods.push_back({"iobinding_floor", [&] { session->ort().Run(run_options, binding); }, {}});

    // Diagnostics: where the core path's time goes.
    const char* in_name = in.name.c_str();
    std::vector<const char*> out_names;
    for (const auto& o : outs) out_names.push_back(o.name.c_str());
    Ort::IoBinding spare(session->ort());
    if (args.diag) {
      methods.push_back({"diag_run_prebuilt_input", [&] {
                           auto o = session->ort().Run(run_options, &in_name, &in_value, 1, out_names.data(),
                                                       out_names.size());
                         },
                         {}});
      if (all_tensors) {  // an IoBinding kept across calls, its values rebound per call
        methods.push_back({"diag_rebind_each_call", [&] {
                             Ort::Value iv = Ort::Value::CreateTensor<float>(mem, input.data(), input.size(),
                                                                             view.shape.data(), view.shape.size());
                             spare.BindInput(in_name, iv);
                             for (size_t k = 0; k < outs.size(); ++k) {
                               auto& b = buffers[k];
                               Ort::Value ov = Ort::Value::CreateTensor(mem, b.bytes.data(), b.bytes.size(),
                                                                        b.view.shape.data(), b.view.shape.size(),
                                                                        b.view.type);
                               spare.BindOutput(out_names[k], ov);
                             }
                             session->ort().Run(run_options, spare);
                           },
                           {}});
      }
      methods.push_back({"diag_create_tensor", [&] {
                           Ort::Value v = Ort::Value::CreateTensor<float>(mem, input.data(), input.size(),
                                                                          view.shape.data(), view.shape.size());
                         },
                         {}});
    }

    measure(methods, args.iters, args.warmup, args.rounds);
    for (auto& m : methods) report(m);
    std::fflush(stdout);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fastort_bench_native: " << e.what() << "\n";
    return 1;
  }
}
