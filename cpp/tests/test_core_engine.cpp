// The core's Engine, SessionPool and Batcher on a real onnxruntime and a tiny
// model, from plain C++ (no Python). Needs FASTORT_TEST_ORT_LIBRARY (a
// libonnxruntime shared library) and FASTORT_TEST_MODEL (y = Relu(x), x and y
// float[batch, 4]); scripts/ctest.sh makes both. Skips (exit 77) without them.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "check.h"
#include "fastort/completion.h"
#include "fastort/engine.h"
#include "fastort/errors.h"
#include "fastort/runtime.h"
#include "fastort/values.h"

using namespace fastort;

namespace {

TensorView rows_view(std::vector<float>& data, int64_t rows) {
  TensorView v;
  v.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  v.data = data.data();
  v.shape = {rows, 4};
  return v;
}

const float* slice_data(OutputSlice& slice) {
  if (slice.value != nullptr) return static_cast<const float*>(view_of(*slice.value).data);
  return static_cast<const float*>(slice.view.data);
}

void test_direct(const std::string& model) {
  EngineConfig config;
  config.session.intra_op_threads = 1;
  config.session.log_level = ORT_LOGGING_LEVEL_FATAL;  // the wrong guess below is logged as an error
  auto engine = Engine::open(ModelSource{model}, config);
  CHECK(engine->replicas() == 1);
  CHECK(engine->model().inputs().size() == 1 && engine->model().inputs()[0].name == "x");
  CHECK(batchability(engine->model().inputs(), engine->model().outputs(), 0).ok);
  CHECK(!engine->has_queue());
  std::vector<float> x{-1, 2, -3, 4, 5, -6, 7, -8};
  std::vector<TensorView> in{rows_view(x, 2)};
  CHECK(engine->route(false, in) == Engine::Route::Direct);  // no queue: direct
  std::vector<Ort::Value> out = engine->run(in);
  CHECK(out.size() == 1);
  TensorView y = view_of(out[0]);
  CHECK((y.shape == std::vector<int64_t>{2, 4}));
  const float* p = static_cast<const float*>(y.data);
  const float want[] = {0, 2, 0, 4, 5, 0, 7, 0};
  for (int i = 0; i < 8; ++i) CHECK(p[i] == want[i]);

  // Shapes are remembered for the next call with the same input shapes.
  engine->shapes().remember(in, {0}, out, [](ElementType) { return true; });
  std::vector<TensorView> shapes;
  CHECK(engine->shapes().lookup(in, {0}, shapes));
  CHECK(shapes.size() == 1 && (shapes[0].shape == std::vector<int64_t>{2, 4}));
  CHECK(!engine->shapes().lookup({rows_view(x, 1)}, {0}, shapes));  // other input shapes: no guess
  std::vector<float> y_buf(8, -1.0f);
  std::vector<TensorView> out_views{rows_view(y_buf, 2)};
  CHECK(engine->run_guessed(in, {0}, out_views));
  for (int i = 0; i < 8; ++i) CHECK(y_buf[i] == want[i]);
  std::vector<TensorView> wrong{rows_view(y_buf, 1)};  // a wrong guess is a miss, not an error
  CHECK(!engine->run_guessed(in, {0}, wrong));
  CHECK(!engine->shapes().lookup(in, {0}, shapes));

  // Request limits.
  EngineConfig limited = config;
  limited.limits.max_rows = 1;
  auto small = Engine::open(ModelSource{model}, limited);
  CHECK_THROWS(small->check_limits(in), RequestTooLargeError);
  // Model errors are C++ exceptions.
  CHECK_THROWS(Engine::open(ModelSource{model + ".missing"}, config), ModelLoadError);
}

void test_queue(const std::string& model) {
  EngineConfig config;
  config.session.intra_op_threads = 1;
  auto engine = Engine::open(ModelSource{model}, config);
  BatchConfig batch;
  batch.max_batch_size = 8;
  batch.max_delay = std::chrono::microseconds(20000);
  engine->start_queue(batch, true);
  CHECK(engine->batching());
  CHECK(engine->unbatchable_reason().empty());

  constexpr int kRequests = 16;
  std::vector<std::vector<float>> inputs(kRequests);
  std::vector<std::shared_ptr<Waiter>> waiters;
  for (int r = 0; r < kRequests; ++r) {
    inputs[r] = {float(-r), float(r), float(-r), float(r)};
    Request request;
    request.inputs = {rows_view(inputs[r], 1)};
    CHECK(engine->route(false, request.inputs) == Engine::Route::Queue);
    CHECK(engine->route(true, request.inputs) == Engine::Route::Direct);  // out= buffers: direct
    waiters.push_back(std::make_shared<Waiter>());
    request.done = Waiter::callback(waiters.back());
    engine->submit(std::move(request));
  }
  for (int r = 0; r < kRequests; ++r) {
    CHECK(waiters[r]->wait_for(std::chrono::milliseconds(10000)));
    Outcome& outcome = waiters[r]->outcome();
    CHECK(!outcome.error);
    if (outcome.error) continue;
    const float* y = slice_data(outcome.outputs.at(0));
    CHECK(y[0] == 0 && y[1] == float(r) && y[2] == 0 && y[3] == float(r));
  }
  BatcherStats s = engine->stats();
  CHECK(s.requests == kRequests);
  CHECK(s.rows == kRequests);
  CHECK(s.batches < kRequests);  // some requests were merged

  // The inline route: an idle queue lends its replica to one caller at a time
  // and counts the run when the claim ends.
  engine->reset_stats();  // the batches above are all counted before their callbacks ran
  {
    std::vector<TensorView> in{rows_view(inputs[3], 1)};
    // The worker that ran the last batch lets go of it just after its callbacks: wait for that.
    Engine::InlineClaim claim;
    for (int i = 0; i < 5000 && !claim.valid(); ++i) {
      claim = engine->claim_inline(in, 0);
      if (!claim.valid()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK(claim.valid() && claim.replica() == 0);
    CHECK(!engine->claim_inline(in, 0).valid());  // the only replica is lent
    CHECK(!engine->claim_inline(in, 0, Clock::now() - std::chrono::seconds(1)).valid());
    CHECK_THROWS(engine->claim_inline(in, 99), InvalidInputError);
    std::vector<Ort::Value> out = engine->run(in, {}, {}, claim.replica());
    const float* y = out.at(0).GetTensorData<float>();
    CHECK(y[0] == 0 && y[1] == 3.0f && y[2] == 0 && y[3] == 3.0f);
    claim.succeeded();
  }
  s = engine->stats();
  CHECK(s.requests == 1 && s.rows == 1 && s.batches == 1 && s.failed == 0);
  CHECK(s.dispatch[static_cast<size_t>(Dispatch::Inline)] == 1);
  CHECK(engine->claim_inline({rows_view(inputs[3], 1)}, 0).valid());  // given back (and a failed run counted)
  CHECK(engine->stats().failed == 1);

  // Backpressure and closing.
  Request bad;
  bad.inputs = {};
  CHECK_THROWS(engine->submit(std::move(bad)), InvalidInputError);
  engine->close(true);
  Request late;
  late.inputs = {rows_view(inputs[0], 1)};
  late.done = [](Outcome&&) {};
  CHECK_THROWS(engine->submit(std::move(late)), ClosedError);
}

// Sequence and map values (values.h), and their check against a declared type.
void test_values() {
  std::vector<float> a{1, 2, 3}, b{4};
  TensorView va, vb;
  va.type = vb.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  va.data = a.data();
  va.shape = {3};
  vb.data = b.data();
  vb.shape = {1};
  std::vector<Ort::Value> parts;
  parts.push_back(host_tensor(va, "a"));
  parts.push_back(host_tensor(vb, "b"));
  Ort::Value seq = make_sequence(parts, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, "s");
  CHECK(seq.GetCount() == 2);
  CHECK(type_string(seq.GetTypeInfo().GetConst()) == "seq(tensor(float))");
  CHECK_THROWS(make_sequence(parts, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, "s"), InvalidInputError);
  CHECK_THROWS(make_sequence({}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, "s"), InvalidInputError);

  // The C API refuses an empty sequence; onnxruntime's SequenceEmpty makes it, once per type.
  const OrtValue* empty = empty_sequence(ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, "s");
  CHECK(empty != nullptr && empty == empty_sequence(ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, "s"));
  CHECK(Ort::ConstValue(empty).GetCount() == 0);
  CHECK(type_string(Ort::ConstValue(empty).GetTypeInfo().GetConst()) == "seq(tensor(string))");

  std::vector<std::string_view> keys{"x", "y"};
  std::vector<double> values{0.5, 1.5};
  TensorView vk, vv;
  vk.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
  vk.strings = keys.data();
  vk.shape = {2};
  vv.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
  vv.data = values.data();
  vv.shape = {2};
  Ort::Value map = make_map(vk, vv, "m");
  CHECK(type_string(map.GetTypeInfo().GetConst()) == "map(string,tensor(double))");
  vv.shape = {1};
  CHECK_THROWS(make_map(vk, vv, "m"), InvalidInputError);  // as many keys as values
  CHECK(!map_supported(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT));

  // An input declared optional(seq(tensor(float))): the sequence or nothing.
  auto tensor_t = std::make_shared<ValueType>();
  tensor_t->kind = ValueKind::Tensor;
  tensor_t->element = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  tensor_t->type_string = "tensor(float)";
  auto seq_t = std::make_shared<ValueType>();
  seq_t->kind = ValueKind::Sequence;
  seq_t->inner = tensor_t;
  seq_t->type_string = "seq(tensor(float))";
  auto opt_t = std::make_shared<ValueType>();
  opt_t->kind = ValueKind::Optional;
  opt_t->inner = seq_t;
  opt_t->type_string = "optional(seq(tensor(float)))";
  IOInfo io;
  io.name = "o";
  io.kind = ValueKind::Optional;
  io.value_type = opt_t;
  io.type_string = opt_t->type_string;
  TensorView given;
  given.value = seq;
  check_prepared(io, given);
  given.value = map;
  CHECK_THROWS(check_prepared(io, given), InvalidInputError);
  TensorView none;
  none.absent = true;
  check_prepared(io, none);
  io.kind = ValueKind::Sequence;
  io.value_type = seq_t;
  CHECK_THROWS(check_prepared(io, none), InvalidInputError);  // not optional
}

}  // namespace

int main() {
  const char* lib = std::getenv("FASTORT_TEST_ORT_LIBRARY");
  const char* model = std::getenv("FASTORT_TEST_MODEL");
  if (lib == nullptr || model == nullptr || *lib == '\0' || *model == '\0') {
    std::printf("test_core_engine: SKIPPED: set FASTORT_TEST_ORT_LIBRARY and FASTORT_TEST_MODEL (scripts/ctest.sh does)\n");
    return 77;
  }
  try {
    Runtime::load(lib);
    test_direct(model);
    test_queue(model);
    test_values();
  } catch (const std::exception& e) {
    fastort_test::fail(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
  }
  return fastort_test::report("test_core_engine");
}
