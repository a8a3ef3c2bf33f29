// The native floor: per-call latency of a model run from C++, no Python.
//
//   fastort_bench_native MODEL [--lib PATH] [--batch N] [--iters N] [--warmup N] [--threads N]
//
// Measures, side by side, (a) fastort's core path (Session::run over a caller
// buffer: what fastort's Python run() goes through) and (b) plain onnxruntime
// with an IoBinding bound once (input and output pre-bound). Prints one JSON
// line per method. The model's first input must be a float32 tensor; dynamic
// dims take --batch (the first) or 1.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "runtime.h"
#include "session.h"

namespace {

struct Args {
  std::string model, lib;
  int64_t batch = 1;
  int iters = 20000, warmup = 2000, threads = 1;
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
    else if (k == "--batch") a.batch = std::stoll(next());
    else if (k == "--iters") a.iters = std::stoi(next());
    else if (k == "--warmup") a.warmup = std::stoi(next());
    else if (k == "--threads") a.threads = std::stoi(next());
    else if (!k.empty() && k[0] != '-') a.model = k;
    else throw std::runtime_error("unknown argument " + k);
  }
  if (a.model.empty() || a.lib.empty())
    throw std::runtime_error("usage: fastort_bench_native MODEL --lib libonnxruntime.so [--batch N] [--iters N]");
  return a;
}

template <typename F>
void report(const char* method, int iters, int warmup, F&& call) {
  for (int i = 0; i < warmup; ++i) call();
  std::vector<double> us(static_cast<size_t>(iters));
  for (auto& t : us) {
    const auto start = std::chrono::steady_clock::now();
    call();
    t = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  }
  const double mean = std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
  std::sort(us.begin(), us.end());
  std::printf("{\"method\": \"%s\", \"median_us\": %.3f, \"p99_us\": %.3f, \"mean_us\": %.3f, \"iters\": %d}\n", method,
              us[us.size() / 2], us[us.size() * 99 / 100], mean, iters);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    fastort::Runtime::load(args.lib);
    fastort::SessionOptions options;
    options.intra_op_threads = args.threads;
    auto session = fastort::Session::open_file(args.model, options);
    const fastort::IOInfo& in = session->inputs().at(0);
    const fastort::IOInfo& out = session->outputs().at(0);
    if (session->inputs().size() != 1 || in.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      throw std::runtime_error("the model must have one float32 input");

    fastort::TensorView view;
    view.type = in.type;
    for (size_t d = 0; d < in.shape.size(); ++d) view.shape.push_back(in.shape[d] >= 0 ? in.shape[d] : (d == 0 ? args.batch : 1));
    const size_t count = fastort::checked_element_count(view.shape, sizeof(float), "input");
    std::vector<float> input(count, 0.5f);
    view.data = input.data();
    const std::vector<fastort::TensorView> inputs{view};

    // (a) fastort's core path, as the Python binding drives it.
    report("fastort_core", args.iters, args.warmup, [&] { auto outputs = session->run(inputs); });

    // (c) diagnostics: plain Run by name with a pre-made input value.
    if (std::getenv("FASTORT_BENCH_DIAG")) {
      const auto* m = fastort::Runtime::get().cpu_memory();
      Ort::Value pre = Ort::Value::CreateTensor<float>(m, input.data(), input.size(), view.shape.data(), view.shape.size());
      const char* in_names[] = {in.name.c_str()};
      const char* out_names[] = {out.name.c_str()};
      Ort::RunOptions ro{nullptr};
      report("diag_run_prebuilt_input", args.iters, args.warmup, [&] {
        auto o = session->ort().Run(ro, in_names, &pre, 1, out_names, 1);
      });
      auto first = session->run(inputs);
      fastort::TensorView ov = fastort::view_of(first[0]);
      std::vector<float> obuf(fastort::checked_element_count(ov.shape, 4, "o"));
      Ort::Value outv = Ort::Value::CreateTensor<float>(m, obuf.data(), obuf.size(), ov.shape.data(), ov.shape.size());
      report("diag_run_prealloc_output", args.iters, args.warmup, [&] {
        session->ort().Run(ro, in_names, &pre, 1, out_names, &outv, 1);
      });
      report("diag_run_prealloc_output_new_values", args.iters, args.warmup, [&] {
        Ort::Value iv = Ort::Value::CreateTensor<float>(m, input.data(), input.size(), view.shape.data(), view.shape.size());
        Ort::Value ov2 = Ort::Value::CreateTensor<float>(m, obuf.data(), obuf.size(), ov.shape.data(), ov.shape.size());
        session->ort().Run(ro, in_names, &iv, 1, out_names, &ov2, 1);
      });
      report("diag_create_tensor", args.iters, args.warmup, [&] {
        Ort::Value v = Ort::Value::CreateTensor<float>(m, input.data(), input.size(), view.shape.data(), view.shape.size());
      });
    }

    // (b) the floor: onnxruntime's C++ API with input and output bound once.
    auto outputs = session->run(inputs);  // learn the output's shape
    fastort::TensorView out_view = fastort::view_of(outputs[0]);
    std::vector<float> output(fastort::checked_element_count(out_view.shape, sizeof(float), "output"));
    const auto* mem = fastort::Runtime::get().cpu_memory();
    Ort::Value in_value = Ort::Value::CreateTensor<float>(mem, input.data(), input.size(), view.shape.data(), view.shape.size());
    Ort::Value out_value =
        Ort::Value::CreateTensor<float>(mem, output.data(), output.size(), out_view.shape.data(), out_view.shape.size());
    Ort::IoBinding binding(session->ort());
    binding.BindInput(in.name.c_str(), in_value);
    binding.BindOutput(out.name.c_str(), out_value);
    Ort::RunOptions run_options;
    report("iobinding_floor", args.iters, args.warmup, [&] { session->ort().Run(run_options, binding); });
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fastort_bench_native: " << e.what() << "\n";
    return 1;
  }
}
