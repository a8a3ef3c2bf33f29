// Native hardening checks of the C++ core, no Python: run under the sanitizers
// by scripts/sanitize.sh and by tests/core/test_fuzz.py.
//
//   fastort_check_core LIBONNXRUNTIME MODEL... [--iters N] [--seed S]
//
// 1. Sizes that overflow or are negative, given straight to the core (shapes
//    numpy could never make): Session::run, check_request_limits and
//    Batcher::submit must refuse them with an InvalidInputError (or
//    RequestTooLargeError) before onnxruntime or an allocation sees them.
// 2. Overlapping output buffers through the C++ API.
// 3. A random-mutation fuzz loop over the given models' bytes: the rank-0 scan
//    (model_scan.cpp) on every mutant, and Session::open_bytes on some; any
//    exception that is not a fastort::Error is a failure.
// Prints one line per part and "check_core: ok"; exits 1 on a failure.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastort/batcher.h"
#include "fastort/errors.h"
#include "fastort/model_scan.h"
#include "fastort/pool.h"
#include "fastort/runtime.h"
#include "fastort/session.h"

namespace {

int failures = 0;

void fail(const std::string& what) {
  std::cerr << "FAIL: " << what << "\n";
  ++failures;
}

// Runs `f`, which must throw an InvalidInputError (RequestTooLargeError is one).
template <typename F>
void expect_refused(const std::string& what, F&& f) {
  try {
    f();
    fail(what + ": accepted");
  } catch (const fastort::InvalidInputError&) {
  } catch (const std::exception& e) {
    fail(what + ": wrong exception: " + e.what());
  }
}

std::vector<unsigned char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Runs `f`, which must throw a RequestTooLargeError.
template <typename F>
void expect_too_large(const std::string& what, F&& f) {
  try {
    f();
    fail(what + ": accepted");
  } catch (const fastort::RequestTooLargeError&) {
  } catch (const std::exception& e) {
    fail(what + ": wrong exception: " + e.what());
  }
}

void check_sizes(const std::string& model) {
  using fastort::TensorView;
  fastort::SessionOptions options;
  options.intra_op_threads = 1;
  auto pool = fastort::SessionPool::open(fastort::ModelSource{model}, options, 2);
  const auto& in = pool->front().inputs().at(0);
  if (!in.has_shape || in.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) throw std::runtime_error("the first model must have a shaped numeric first input");
  float dummy[64] = {};
  // Dynamic dims take the huge value, fixed dims their own: only the size is wrong.
  auto shape_with = [&](int64_t huge) {
    std::vector<int64_t> shape = in.shape;
    for (auto& d : shape) d = d < 0 ? huge : d;
    return shape;
  };
  const std::vector<int64_t> huge = {std::numeric_limits<int64_t>::max(), int64_t{1} << 62, int64_t{1} << 58,
                                     int64_t{1} << 56};
  fastort::BatcherOptions bo;
  bo.max_batch_size = 8;
  fastort::Batcher batcher(pool, bo);
  fastort::RequestLimits limits;
  limits.max_bytes = 1 << 20;
  int n = 0;
  for (int64_t h : huge) {
    TensorView v;
    v.type = in.type;
    v.data = dummy;
    v.shape = shape_with(h);
    const std::string s = fastort::shape_to_string(v.shape);
    expect_too_large("run with shape " + s, [&] { pool->run({v}); });
    expect_too_large("limits with shape " + s,
                     [&] { fastort::check_request_limits({v}, pool->front().inputs(), limits); });
    fastort::Request r;
    r.inputs = {v};
    r.done = [](fastort::Outcome&&) {};
    expect_too_large("submit with shape " + s, [&] { batcher.submit(std::move(r)); });
    ++n;
  }
  TensorView neg;
  neg.type = in.type;
  neg.data = dummy;
  neg.shape = shape_with(-5);
  expect_refused("run with a negative dim", [&] { pool->run({neg}); });
  // Strings: a count whose views overflow.
  TensorView s;
  s.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
  s.shape = {int64_t{1} << 61, 4};
  expect_too_large("string byte count", [&] { fastort::view_bytes(s, "strings"); });
  batcher.close(true);
  std::cout << "sizes: " << n << " overflowing shapes refused by run, limits and submit (RequestTooLargeError)\n";
}

void check_overlap(const std::string& model) {
  fastort::SessionOptions options;
  options.intra_op_threads = 1;
  auto session = fastort::Session::open_file(model, options);
  const auto& in = session->inputs().at(0);
  const auto& out = session->outputs().at(0);
  if (in.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || out.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return;
  std::vector<int64_t> ishape = in.shape, oshape = out.shape;
  for (auto& d : ishape) d = d < 0 ? 1 : d;
  for (auto& d : oshape) d = d < 0 ? 1 : d;
  std::vector<float> buf(4096);
  fastort::TensorView x{ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, buf.data(), nullptr, ishape};
  fastort::TensorView y{ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, buf.data(), nullptr, oshape};  // same memory
  expect_refused("output buffer over the input", [&] { session->run({x}, {0}, {y}); });
  std::cout << "overlap: an output buffer over an input refused\n";
}

void fuzz_models(const std::vector<std::vector<unsigned char>>& seeds, int iters, unsigned seed) {
  std::mt19937 rng(seed);
  fastort::SessionOptions options;
  options.intra_op_threads = 1;
  options.log_level = ORT_LOGGING_LEVEL_FATAL;
  int loaded = 0, refused = 0, scanned = 0;
  for (int i = 0; i < iters; ++i) {
    std::vector<unsigned char> data = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits && !data.empty(); ++e) {
      const size_t pos = rng() % data.size();
      switch (rng() % 5) {
        case 0: data[pos] = static_cast<unsigned char>(rng()); break;
        case 1: data[pos] ^= static_cast<unsigned char>(1u << (rng() % 8)); break;
        case 2: data.resize(pos); break;
        case 3: data.insert(data.begin() + static_cast<std::ptrdiff_t>(pos), 1 + rng() % 8,
                            static_cast<unsigned char>(rng())); break;
        default: {  // a maximal varint
          const unsigned char v[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
          data.insert(data.begin() + static_cast<std::ptrdiff_t>(pos), v, v + 10);
        }
      }
    }
    fastort::scalar_inputs_of(data.data(), data.size());
    ++scanned;
    if (i % 8 != 0 || data.empty()) continue;  // onnxruntime's loader is the slow part
    try {
      auto s = fastort::Session::open_bytes(data.data(), data.size(), options, "mutant");
      ++loaded;
    } catch (const fastort::Error&) {
      ++refused;
    } catch (const std::exception& e) {
      fail(std::string("open_bytes threw a non-fastort exception: ") + e.what());
    }
  }
  std::cout << "fuzz: " << scanned << " mutants scanned, " << loaded + refused << " loaded by onnxruntime ("
            << loaded << " accepted, " << refused << " refused with ModelLoadError)\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  int iters = 20000;
  unsigned seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--iters" && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (a == "--seed" && i + 1 < argc) seed = static_cast<unsigned>(std::atoi(argv[++i]));
    else positional.push_back(a);
  }
  if (positional.size() < 2) {
    std::cerr << "usage: fastort_check_core LIBONNXRUNTIME MODEL... [--iters N] [--seed S]\n";
    return 2;
  }
  try {
    fastort::Runtime::load(positional[0]);
    std::vector<std::vector<unsigned char>> seeds;
    for (size_t i = 1; i < positional.size(); ++i) seeds.push_back(read_file(positional[i]));
    check_sizes(positional[1]);
    check_overlap(positional[1]);
    fuzz_models(seeds, iters, seed);
  } catch (const std::exception& e) {
    fail(std::string("unexpected: ") + e.what());
  }
  if (failures) {
    std::cout << "check_core: " << failures << " failure(s)\n";
    return 1;
  }
  std::cout << "check_core: ok\n";
  return 0;
}
