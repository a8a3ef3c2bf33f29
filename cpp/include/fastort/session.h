// One onnxruntime session, its IO metadata, and a run() that feeds caller-owned
// buffers to onnxruntime without copying them.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fastort/tensor.h"

namespace fastort {

struct SessionOptions {
  // onnxruntime provider names in priority order ("CPUExecutionProvider", ...).
  std::vector<std::string> providers{"CPUExecutionProvider"};
  // Options of each provider (empty, or one list per entry of `providers`):
  // CUDA's go through UpdateCUDAProviderOptions ("device_id", "gpu_mem_limit",
  // "arena_extend_strategy", "cudnn_conv_algo_search", "enable_cuda_graph",
  // "use_tf32", ...), TensorRT's through UpdateTensorRTProviderOptions, the
  // others' to AppendExecutionProvider as they are.
  std::vector<std::vector<std::pair<std::string, std::string>>> provider_options;
  int intra_op_threads = 0;  // 0: onnxruntime's default (one per core)
  // Run on onnxruntime's process-wide pools (Runtime::configure_global_threads)
  // instead of pools of this session's own; the thread counts above are then unused.
  bool use_global_thread_pools = false;
  int inter_op_threads = 0;
  GraphOptimizationLevel graph_optimization = ORT_ENABLE_ALL;
  ExecutionMode execution_mode = ORT_SEQUENTIAL;
  int log_level = ORT_LOGGING_LEVEL_WARNING;
  // CUDA sessions: copy host inputs of at least this many bytes into pinned
  // (page-locked) memory from onnxruntime's "CudaPinned" allocator before the
  // run, so that onnxruntime's host-to-device copy is a DMA transfer. 0: off.
  // Silently off when the runtime offers no pinned allocator.
  size_t pinned_staging_min_bytes = 64 * 1024;
  // Extra session config entries (onnxruntime_session_options_config_keys.h).
  std::vector<std::pair<std::string, std::string>> config;
  // onnxruntime's automatic EP selection ("prefer_gpu", "max_performance", ...,
  // see ep::set_selection_policy) instead of `providers`; "" = off.
  std::string ep_policy;
};

// What sessions of one pool share (see SessionPool).
struct SharedState {
  OrtPrepackedWeightsContainer* prepacked = nullptr;  // prepacked weights, held once
  // Initializers onnxruntime takes from these values (which must outlive the
  // session) instead of the model's own copies.
  std::vector<std::pair<std::string, const OrtValue*>> initializers;
};

// The external-data "file" name under which a shared initializer's buffer is
// handed to onnxruntime (the model's TensorProto must point there).
std::string shared_weight_file(const std::string& initializer);

// Bounds on one request, checked before fastort allocates anything for it.
struct RequestLimits {
  size_t max_bytes = 0;  // input bytes per request (see view_bytes); 0: no bound
  size_t max_rows = 0;   // rows per request: the largest dim `row_axis` of its inputs; 0: no bound
  size_t row_axis = 0;
};

// What a request's inputs may still take of max_request_bytes, charged while
// the caller converts them (before an input is copied or its strings encoded).
// Without a bound, no single charge may exceed the machine's physical memory:
// such a copy can never succeed, and with memory overcommit the attempt may end
// in the OOM killer rather than an exception.
struct RequestBudget {
  size_t max_bytes = 0;  // 0: no bound (but never more than physical memory)
  size_t used = 0;
  // Throws RequestTooLargeError, naming `what`, when `bytes` more do not fit.
  void take(size_t bytes, const std::string& what);
};

// The machine's physical memory in bytes (SIZE_MAX when unknown).
size_t physical_memory() noexcept;

// Bytes of a tensor view: elements * item size, or for strings the sum of their
// lengths plus 16 bytes (a string_view) per element. Throws RequestTooLargeError when the computation overflows.
size_t view_bytes(const TensorView& view, const std::string& what);

// Throws RequestTooLargeError when `inputs` (one per model input `ins`) exceed
// `limits`; names the input and the bound.
void check_request_limits(const std::vector<TensorView>& inputs, const std::vector<IOInfo>& ins,
                          const RequestLimits& limits);

class Session {
 public:
  // Loads a model file (external data is resolved next to it) or serialized bytes.
  // Throws ModelLoadError naming `path` / `label` and onnxruntime's reason.
  // `shared` carries weights shared with other sessions of the same model.
  static std::shared_ptr<Session> open_file(const std::string& path, const SessionOptions& options,
                                            const SharedState& shared = {});
  static std::shared_ptr<Session> open_bytes(const void* data, size_t size,
                                             const SessionOptions& options,
                                             const std::string& label = "model bytes",
                                             const SharedState& shared = {});

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::vector<IOInfo>& inputs() const noexcept { return inputs_; }
  const std::vector<IOInfo>& outputs() const noexcept { return outputs_; }
  // Index of the input/output with this name, or -1.
  std::ptrdiff_t input_index(const std::string& name) const noexcept;
  std::ptrdiff_t output_index(const std::string& name) const noexcept;

  // Throws InvalidInputError unless `view` fits input `index`: element type,
  // rank, fixed dims; for a prepared value (sequence, map, optional; see
  // values.h) or an absent optional, its declared type.
  void check_input(size_t index, const TensorView& view) const;
  // Same for a caller-provided output buffer (which must be a non-string tensor).
  void check_output_buffer(size_t index, const TensorView& view) const;
  // Input `index` as an onnxruntime value over the view's memory (checked as
  // check_input does); for callers that bind values themselves (IoBinding).
  Ort::Value input_value(size_t index, const TensorView& view) const {
    check_input(index, view);
    return wrap(view, "input", inputs_.at(index).name);
  }
  // Output `index` as an onnxruntime value over a caller buffer (checked).
  Ort::Value output_value(size_t index, const TensorView& view) const {
    check_output_buffer(index, view);
    return wrap(view, "output buffer for", outputs_.at(index).name);
  }

  // Runs the model. `inputs`: one view per model input, in model order; buffers
  // are read in place; prepared values (TensorView::value) are fed as they are,
  // absent optionals left out. `outputs`: indices of the outputs wanted (all when empty).
  // `out`: empty, or one view per wanted output; a view with a buffer is written
  // in place (its shape must be the output's), one without is allocated by
  // onnxruntime. Thread-safe; returns one value per wanted output.
  std::vector<Ort::Value> run(const std::vector<TensorView>& inputs,
                              const std::vector<size_t>& outputs = {},
                              const std::vector<TensorView>& out = {}) const;

  // Same, with every output left where the model's provider puts it (device
  // memory for a CUDA session), through an IoBinding. Thread-safe.
  std::vector<Ort::Value> run_to_device(const std::vector<TensorView>& inputs,
                                        const std::vector<size_t>& outputs = {}) const;

  // Where this session runs: CUDA (with its device id) when it was opened with
  // the CUDA provider, else the CPU. Each CUDA session (one per replica) has a
  // CUDA provider instance, and so a compute stream, of its own.
  Device device() const noexcept { return device_; }
  const std::string& provider_names() const noexcept { return provider_names_; }

  Ort::Session& ort() noexcept { return session_; }

  // Marks inputs that the model declares as rank 0 (see model_scan.h): their
  // rank is then checked like any other. Called once, by open_*().
  void mark_scalar_inputs(const std::vector<std::string>& names);

  struct Key {  // only open_*() construct sessions
   private:
    Key() = default;
    friend class Session;
  };
  Session(Key, Ort::Session session, const SessionOptions& options);

 private:
  Ort::Value wrap(const TensorView& view, const char* kind, const std::string& name) const;
  // The memory info for a device view; throws InvalidInputError when the view's
  // device is not this session's.
  const OrtMemoryInfo* device_memory(const TensorView& view, const char* kind, const std::string& name) const;
  // Throws InvalidInputError when two output buffers, or an output buffer and
  // an input, share memory.
  void check_no_overlap(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                        const std::vector<TensorView>& out) const;

  mutable Ort::Session session_;  // Run() is thread-safe in onnxruntime
  std::vector<IOInfo> inputs_;
  std::vector<IOInfo> outputs_;
  std::vector<const char*> input_names_;   // point into inputs_[i].name
  std::vector<const char*> output_names_;  // point into outputs_[i].name
  Device device_;
  std::string provider_names_;
  Ort::MemoryInfo device_memory_{nullptr};  // CUDA sessions: "Cuda" memory of device_.id
  // CUDA sessions with pinned staging: onnxruntime's pinned host allocator (null when off).
  Ort::MemoryInfo pinned_memory_{nullptr};
  std::unique_ptr<Ort::Allocator> pinned_;
  size_t pinned_min_bytes_ = 0;
  // A run's feeds: the inputs as onnxruntime values (views over the caller's
  // buffers, or (pinned staging) over copies it holds; prepared values borrowed)
  // and, when an optional input is left out, the names of those fed.
  struct Feeds;
  void input_values(const std::vector<TensorView>& inputs, Feeds& feeds) const;
};

}  // namespace fastort
