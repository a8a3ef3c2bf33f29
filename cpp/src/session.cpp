#include "fastort/session.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>
#include <functional>
#include <unordered_map>

#include "fastort/ep_devices.h"
#include "fastort/errors.h"
#include "fastort/model_scan.h"
#include "fastort/runtime.h"
#include "fastort/values.h"

namespace fastort {
namespace {

Ort::SessionOptions make_options(const SessionOptions& o) {
  Ort::SessionOptions so;
  if (o.use_global_thread_pools) {
    so.DisablePerSessionThreads();
  } else {
    if (o.intra_op_threads > 0) so.SetIntraOpNumThreads(o.intra_op_threads);
    if (o.inter_op_threads > 0) so.SetInterOpNumThreads(o.inter_op_threads);
  }
  so.SetGraphOptimizationLevel(o.graph_optimization);
  so.SetExecutionMode(o.execution_mode);
  so.SetLogSeverityLevel(o.log_level);
  for (const auto& kv : o.config) so.AddConfigEntry(kv.first.c_str(), kv.second.c_str());
  if (!o.ep_policy.empty()) ep::set_selection_policy(so, o.ep_policy);
  static const std::vector<std::pair<std::string, std::string>> kNone;
  for (size_t i = 0; i < o.providers.size(); ++i) {
    const std::string& p = o.providers[i];
    const auto& opts = i < o.provider_options.size() ? o.provider_options[i] : kNone;
    std::vector<const char*> keys, values;
    for (const auto& kv : opts) {
      keys.push_back(kv.first.c_str());
      values.push_back(kv.second.c_str());
    }
    if (p == "CPUExecutionProvider") continue;  // always there, always last
    if (ep::append_plugin(so, p, opts)) continue;  // a registered plugin EP library's
    if (p == "CUDAExecutionProvider") {
      OrtCUDAProviderOptionsV2* cuda = nullptr;
      Ort::ThrowOnError(Ort::GetApi().CreateCUDAProviderOptions(&cuda));
      std::unique_ptr<OrtCUDAProviderOptionsV2, decltype(Ort::GetApi().ReleaseCUDAProviderOptions)>
          guard(cuda, Ort::GetApi().ReleaseCUDAProviderOptions);
      if (!keys.empty())
        Ort::ThrowOnError(Ort::GetApi().UpdateCUDAProviderOptions(cuda, keys.data(), values.data(), keys.size()));
      so.AppendExecutionProvider_CUDA_V2(*cuda);
      continue;
    }
    if (p == "TensorrtExecutionProvider") {
      OrtTensorRTProviderOptionsV2* trt = nullptr;
      Ort::ThrowOnError(Ort::GetApi().CreateTensorRTProviderOptions(&trt));
      std::unique_ptr<OrtTensorRTProviderOptionsV2, decltype(Ort::GetApi().ReleaseTensorRTProviderOptions)>
          guard(trt, Ort::GetApi().ReleaseTensorRTProviderOptions);
      if (!keys.empty())
        Ort::ThrowOnError(Ort::GetApi().UpdateTensorRTProviderOptions(trt, keys.data(), values.data(), keys.size()));
      so.AppendExecutionProvider_TensorRT_V2(*trt);
      continue;
    }
    std::unordered_map<std::string, std::string> generic(opts.begin(), opts.end());
    // onnxruntime knows the others by their full names ("XnnpackExecutionProvider");
    // runtimes that predate those take a short one, tried second.
    try {
      so.AppendExecutionProvider(p, generic);
    } catch (const Ort::Exception& first) {
      std::string name = p;
      const std::string suffix = "ExecutionProvider";
      if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
        name.resize(name.size() - suffix.size());
      if (name == p) throw;
      try {
        so.AppendExecutionProvider(name, generic);
      } catch (const Ort::Exception&) {
        throw first;
      }
    }
  }
  return so;
}

template <typename Open>
std::shared_ptr<Session> open(Open&& open_fn, const SessionOptions& options, const SharedState& shared,
                              const std::string& what, const std::vector<std::string>& scalar_inputs) {
  // The environment (and onnxruntime's default logger) must exist before a
  // provider library is loaded by make_options().
  Runtime::get().env();
  try {
    Ort::SessionOptions so = make_options(options);
    if (!shared.initializers.empty()) {
      // The model refers to each weight as an external data file named after
      // the initializer; onnxruntime finds that "file" in our buffer, and then
      // uses the buffer itself as the initializer (AddInitializer): no copy.
      std::vector<std::string> files;
      std::vector<char*> buffers;
      std::vector<size_t> lengths;
      for (const auto& [name, value] : shared.initializers) {
        so.AddInitializer(name.c_str(), value);
        Ort::ConstValue v(value);
        files.push_back(shared_weight_file(name));
        // GetTensorMutableData (API 1), not GetTensorRawData: since 1.23's headers that
        // wraps GetTensorData (API 23), absent from the older runtimes fastort also loads.
        void* raw = nullptr;
        Ort::ThrowOnError(Ort::GetApi().GetTensorMutableData(const_cast<OrtValue*>(value), &raw));
        buffers.push_back(static_cast<char*>(raw));
        lengths.push_back(v.GetTensorTypeAndShapeInfo().GetElementCount() *
                          element_size(v.GetTensorTypeAndShapeInfo().GetElementType()));
      }
      so.AddExternalInitializersFromFilesInMemory(files, buffers, lengths);
    }
    auto session = std::make_shared<Session>(Session::Key{}, open_fn(so), options);
    session->mark_scalar_inputs(scalar_inputs);
    return session;
  } catch (const Ort::Exception& e) {
    throw ModelLoadError("cannot load " + what + ": " + e.what());
  } catch (const ModelLoadError& e) {
    throw ModelLoadError("cannot load " + what + ": " + e.what());
  }
}

}  // namespace

std::string shared_weight_file(const std::string& initializer) {
  std::string file = "fastort-shared-weight-";
  for (char c : initializer) file += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return file + "-" + std::to_string(std::hash<std::string>{}(initializer)) + ".bin";
}

namespace {

[[noreturn]] void rethrow_run_error(const Ort::Exception& e) {
  if (e.GetOrtErrorCode() == ORT_INVALID_ARGUMENT)
    throw InvalidInputError(std::string("onnxruntime rejected the inputs: ") + e.what());
  throw RunError(std::string("onnxruntime failed to run the model: ") + e.what());
}

}  // namespace

std::shared_ptr<Session> Session::open_file(const std::string& path, const SessionOptions& options,
                                            const SharedState& shared) {
  return open([&](Ort::SessionOptions& so) {
                return shared.prepacked ? Ort::Session(Runtime::get().env(), path.c_str(), so, shared.prepacked)
                                        : Ort::Session(Runtime::get().env(), path.c_str(), so);
              },
              options, shared, "model file '" + path + "'", scalar_inputs_of_file(path));
}

std::shared_ptr<Session> Session::open_bytes(const void* data, size_t size, const SessionOptions& options,
                                             const std::string& label, const SharedState& shared) {
  if (size == 0) throw ModelLoadError("cannot load " + label + ": the model is empty (0 bytes)");
  return open([&](Ort::SessionOptions& so) {
                return shared.prepacked ? Ort::Session(Runtime::get().env(), data, size, so, shared.prepacked)
                                        : Ort::Session(Runtime::get().env(), data, size, so);
              },
              options, shared, label, scalar_inputs_of(data, size));
}

Session::Session(Key, Ort::Session session, const SessionOptions& options) : session_(std::move(session)) {
  for (size_t i = 0; i < options.providers.size(); ++i) {
    provider_names_ += (provider_names_.empty() ? "" : ", ") + options.providers[i];
    if (options.providers[i] != "CUDAExecutionProvider" || !device_.is_cpu()) continue;
    device_ = Device{DeviceType::Cuda, 0};
    if (i < options.provider_options.size())
      for (const auto& kv : options.provider_options[i])
        if (kv.first == "device_id") device_.id = std::stoi(kv.second);
    device_memory_ = Ort::MemoryInfo("Cuda", OrtDeviceAllocator, device_.id, OrtMemTypeDefault);
  }
  // Plugin EPs and automatic selection: what onnxruntime actually chose.
  if (!options.ep_policy.empty() ||
      std::any_of(options.providers.begin(), options.providers.end(), ep::is_plugin_ep)) {
    std::string chosen;
    for (const std::string& name : ep::session_eps(session_)) chosen += (chosen.empty() ? "" : ", ") + name;
    // onnxruntime runs what the chosen EPs cannot on the CPU EP, always.
    if (!chosen.empty() && chosen.find("CPUExecutionProvider") == std::string::npos) chosen += ", CPUExecutionProvider";
    if (!chosen.empty()) provider_names_ = chosen;
  }
  if (!device_.is_cpu() && options.pinned_staging_min_bytes > 0) {
    try {
      pinned_memory_ = Ort::MemoryInfo("CudaPinned", OrtDeviceAllocator, 0, OrtMemTypeCPUOutput);
      pinned_ = std::make_unique<Ort::Allocator>(session_, pinned_memory_);
      pinned_min_bytes_ = options.pinned_staging_min_bytes;
    } catch (const Ort::Exception&) {
      pinned_.reset();  // no pinned allocator in this runtime: onnxruntime copies from pageable memory
    }
  }
  Ort::AllocatorWithDefaultOptions alloc;
  const size_t n_in = session_.GetInputCount();
  const size_t n_out = session_.GetOutputCount();
  inputs_.reserve(n_in);
  outputs_.reserve(n_out);
  for (size_t i = 0; i < n_in; ++i) {
    auto name = session_.GetInputNameAllocated(i, alloc);
    inputs_.push_back(describe(name.get(), session_.GetInputTypeInfo(i).GetConst()));
  }
  for (size_t i = 0; i < n_out; ++i) {
    auto name = session_.GetOutputNameAllocated(i, alloc);
    outputs_.push_back(describe(name.get(), session_.GetOutputTypeInfo(i).GetConst()));
  }
  for (const auto* ios : {&inputs_, &outputs_})
    for (const auto& io : *ios) {
      bool ok = is_valid_utf8(io.name);
      for (const auto& dim : io.dim_names) ok = ok && is_valid_utf8(dim);
      if (!ok)
        throw ModelLoadError("the model has an input or output whose name or dim names are not valid UTF-8 "
                             "(ONNX names are UTF-8 strings)");
    }
  for (const auto& io : inputs_) input_names_.push_back(io.name.c_str());
  for (const auto& io : outputs_) output_names_.push_back(io.name.c_str());
}

void Session::mark_scalar_inputs(const std::vector<std::string>& names) {
  for (const auto& name : names) {
    const auto i = input_index(name);
    if (i >= 0 && inputs_[static_cast<size_t>(i)].kind == ValueKind::Tensor && inputs_[static_cast<size_t>(i)].shape.empty())
      inputs_[static_cast<size_t>(i)].has_shape = true;  // declared rank 0, not unknown rank
  }
}

std::ptrdiff_t Session::input_index(const std::string& name) const noexcept {
  for (size_t i = 0; i < inputs_.size(); ++i)
    if (inputs_[i].name == name) return static_cast<std::ptrdiff_t>(i);
  return -1;
}

std::ptrdiff_t Session::output_index(const std::string& name) const noexcept {
  for (size_t i = 0; i < outputs_.size(); ++i)
    if (outputs_[i].name == name) return static_cast<std::ptrdiff_t>(i);
  return -1;
}

namespace {

// Messages are built only on failure: this runs on every call.
std::string label(const char* kind, const std::string& name) { return std::string(kind) + " '" + name + "'"; }

void check_fit(const IOInfo& io, const TensorView& view, const char* kind) {
  if (io.kind != ValueKind::Tensor)
    throw InvalidInputError(label(kind, io.name) + " is of type " + io.type_string + ": fastort passes tensors only");
  if (view.type != io.type)
    throw InvalidInputError(label(kind, io.name) + ": expected dtype " + element_type_name(io.type) + ", got " +
                            element_type_name(view.type));
  if (!io.has_shape) return;
  if (view.shape.size() != io.shape.size())
    throw InvalidInputError(label(kind, io.name) + ": expected rank " + std::to_string(io.shape.size()) + " (shape " +
                            io.shape_string() + "), got rank " + std::to_string(view.shape.size()) + " (shape " +
                            shape_to_string(view.shape) + ")");
  for (size_t d = 0; d < io.shape.size(); ++d) {
    if (io.shape[d] >= 0 && view.shape[d] != io.shape[d])
      throw InvalidInputError(label(kind, io.name) + ": dim " + std::to_string(d) + " must be " +
                              std::to_string(io.shape[d]) + " (shape " + io.shape_string() + "), got shape " +
                              shape_to_string(view.shape));
  }
}

// Element count of `shape`, checked for overflow; the message names the tensor.
size_t element_count(const TensorView& view, size_t item, const char* kind, const std::string& name) {
  size_t count = 1;
  bool overflow = false;
  for (int64_t d : view.shape) {
    if (d < 0) return checked_element_count(view.shape, item, label(kind, name));  // throws
    overflow = overflow || __builtin_mul_overflow(count, static_cast<size_t>(d), &count);
  }
  size_t bytes = 0;
  if (overflow || __builtin_mul_overflow(count, item == 0 ? 1 : item, &bytes) ||
      bytes > static_cast<size_t>(std::numeric_limits<int64_t>::max()))
    return checked_element_count(view.shape, item, label(kind, name));  // throws
  return count;
}

}  // namespace

size_t physical_memory() noexcept {
  static const size_t bytes = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : SIZE_MAX;
  }();
  return bytes;
}

void RequestBudget::take(size_t bytes, const std::string& what) {
  if (max_bytes == 0) {
    if (bytes > physical_memory())
      throw RequestTooLargeError(what + " needs more memory than this machine has (" +
                                 std::to_string(physical_memory()) + " bytes)");
    return;
  }
  if (__builtin_add_overflow(used, bytes, &used) || used > max_bytes)
    throw RequestTooLargeError(what + " brings the request to more than max_request_bytes=" +
                               std::to_string(max_bytes) + " bytes");
}

size_t view_bytes(const TensorView& view, const std::string& what) {
  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
    // Their UTF-8 bytes plus a view per element (what fastort holds for them).
    const size_t count = checked_element_count(view.shape, sizeof(std::string_view), what);
    size_t bytes = count * sizeof(std::string_view);
    if (view.strings == nullptr) return bytes;
    for (size_t i = 0; i < count; ++i)
      if (__builtin_add_overflow(bytes, view.strings[i].size(), &bytes))
        throw RequestTooLargeError(what + ": the strings' total size overflows");
    return bytes;
  }
  const size_t item = element_size(view.type);
  return checked_element_count(view.shape, item, what) * (item == 0 ? 1 : item);
}

void check_request_limits(const std::vector<TensorView>& inputs, const std::vector<IOInfo>& ins,
                          const RequestLimits& limits) {
  if (limits.max_bytes == 0 && limits.max_rows == 0) return;
  size_t total = 0;
  for (size_t i = 0; i < inputs.size() && i < ins.size(); ++i) {
    const TensorView& v = inputs[i];
    if (!v.is_tensor()) continue;  // charged while it was built (RequestBudget)
    if (limits.max_rows != 0 && v.shape.size() > limits.row_axis && v.shape[limits.row_axis] >= 0 &&
        static_cast<uint64_t>(v.shape[limits.row_axis]) > limits.max_rows)
      throw RequestTooLargeError(label("input", ins[i].name) + ": " + std::to_string(v.shape[limits.row_axis]) +
                                 " rows (dim " + std::to_string(limits.row_axis) + " of shape " +
                                 shape_to_string(v.shape) + ") exceed max_request_rows=" +
                                 std::to_string(limits.max_rows));
    if (limits.max_bytes == 0) continue;
    const size_t bytes = view_bytes(v, label("input", ins[i].name));
    if (__builtin_add_overflow(total, bytes, &total) || total > limits.max_bytes)
      throw RequestTooLargeError(label("input", ins[i].name) + " (shape " + shape_to_string(v.shape) +
                                 ") brings the request to more than max_request_bytes=" +
                                 std::to_string(limits.max_bytes) + " bytes");
  }
}

void Session::check_input(size_t index, const TensorView& view) const {
  if (!view.is_tensor()) return check_prepared(inputs_.at(index), view);
  check_fit(inputs_.at(index), view, "input");
}

void Session::check_output_buffer(size_t index, const TensorView& view) const {
  const IOInfo& io = outputs_.at(index);
  if (io.kind == ValueKind::Tensor && io.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING)
    throw InvalidInputError(label("output buffer for", io.name) + ": string outputs cannot be written into a caller buffer");
  check_fit(io, view, "output buffer for");
}

const OrtMemoryInfo* Session::device_memory(const TensorView& view, const char* kind, const std::string& name) const {
  if (device_.is_cpu())
    throw InvalidInputError(label(kind, name) + " is on " + view.device.str() + ", but this engine runs on the CPU (" +
                            provider_names_ + "): pass host data (e.g. numpy), or open the engine with the CUDA "
                            "provider (providers=['cuda', 'cpu'])");
  if (view.device.id >= 0 && view.device.id != device_.id)
    throw InvalidInputError(label(kind, name) + " is on " + view.device.str() + ", but this engine runs on " +
                            device_.str() + ": move it there first (e.g. tensor.to('" + device_.str() + "'))");
  return device_memory_;
}

Ort::Value Session::wrap(const TensorView& view, const char* kind, const std::string& name) const {
  const Runtime& rt = Runtime::get();
  if (view.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
    return string_tensor(view, element_count(view, sizeof(std::string_view), kind, name));
  }
  const size_t item = element_size(view.type);
  if (item == 0)
    throw InvalidInputError(label(kind, name) + ": element type " + element_type_name(view.type) + " is not supported");
  const size_t bytes = element_count(view, item, kind, name) * item;
  static char empty_buffer[16];  // onnxruntime refuses a null buffer, even for 0 elements
  void* data = view.data != nullptr ? view.data : (bytes == 0 ? empty_buffer : nullptr);
  if (data == nullptr) throw InvalidInputError(label(kind, name) + ": no data buffer");
  if (!view.device.is_cpu()) return Ort::Value::CreateTensor(device_memory(view, kind, name), data, bytes,
                                                             view.shape.data(), view.shape.size(), view.type);
  return Ort::Value::CreateTensor(rt.cpu_memory(), data, bytes, view.shape.data(), view.shape.size(), view.type);
}

struct Session::Feeds {
  std::vector<Ort::Value> values;
  std::vector<Ort::MemoryAllocation> staged;  // pinned copies (CUDA sessions): freed after the run
  std::vector<size_t> borrowed;               // entries of `values` the caller owns (prepared values)
  std::vector<const char*> names;             // with an input left out: the names fed
  bool omitted = false;
  Feeds() = default;
  Feeds(const Feeds&) = delete;
  Feeds& operator=(const Feeds&) = delete;
  ~Feeds() {
    for (size_t i : borrowed) values[i].release();  // not ours to free
  }
};

void Session::input_values(const std::vector<TensorView>& inputs, Feeds& feeds) const {
  std::vector<Ort::Value>& in_values = feeds.values;
  in_values.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorView& v = inputs[i];
    if (!v.is_tensor()) {  // a sequence, map or optional (see values.h)
      check_prepared(inputs_[i], v);
      if (v.absent) {
        if (!feeds.omitted) feeds.names.assign(input_names_.begin(), input_names_.begin() + static_cast<std::ptrdiff_t>(i));
        feeds.omitted = true;
        continue;
      }
      feeds.borrowed.push_back(in_values.size());
      in_values.emplace_back(const_cast<OrtValue*>(v.value));  // released unfreed by ~Feeds
      if (feeds.omitted) feeds.names.push_back(input_names_[i]);
      continue;
    }
    if (feeds.omitted) feeds.names.push_back(input_names_[i]);
    check_input(i, v);
    if (pinned_ && v.device.is_cpu() && v.data != nullptr && v.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
      const size_t item = element_size(v.type);
      const size_t bytes = item == 0 ? 0 : element_count(v, item, "input", inputs_[i].name) * item;
      if (bytes >= pinned_min_bytes_) {
        feeds.staged.push_back(pinned_->GetAllocation(bytes));
        std::memcpy(feeds.staged.back().get(), v.data, bytes);
        in_values.push_back(Ort::Value::CreateTensor(pinned_memory_, feeds.staged.back().get(), bytes, v.shape.data(),
                                                     v.shape.size(), v.type));
        continue;
      }
    }
    in_values.push_back(wrap(v, "input", inputs_[i].name));
  }
}

std::vector<Ort::Value> Session::run_to_device(const std::vector<TensorView>& inputs,
                                              const std::vector<size_t>& outputs) const {
  if (inputs.size() != inputs_.size())
    throw InvalidInputError("the model takes " + std::to_string(inputs_.size()) + " inputs, got " +
                            std::to_string(inputs.size()));
  try {
    Ort::IoBinding binding(session_);
    Feeds feeds;
    input_values(inputs, feeds);
    const std::vector<const char*>& in_names = feeds.omitted ? feeds.names : input_names_;
    for (size_t i = 0; i < feeds.values.size(); ++i) binding.BindInput(in_names[i], feeds.values[i]);
    const OrtMemoryInfo* where = device_.is_cpu() ? Runtime::get().cpu_memory() : static_cast<const OrtMemoryInfo*>(device_memory_);
    const size_t n = outputs.empty() ? outputs_.size() : outputs.size();
    for (size_t k = 0; k < n; ++k) {
      const size_t idx = outputs.empty() ? k : outputs[k];
      if (idx >= outputs_.size()) throw InvalidInputError("output index " + std::to_string(idx) + " out of range");
      // Non-tensor outputs (sequences, maps) and strings are produced on the host.
      const bool host = outputs_[idx].kind != ValueKind::Tensor || outputs_[idx].type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
      binding.BindOutput(output_names_[idx], host ? Runtime::get().cpu_memory() : where);
    }
    // Run() waits for this session's own CUDA stream at its end (onnxruntime's
    // default), so the outputs are ready when it returns; nothing waits on the
    // whole device.
    session_.Run(Ort::RunOptions{nullptr}, binding);
    return binding.GetOutputValues();
  } catch (const Ort::Exception& e) {
    rethrow_run_error(e);
  }
}

void Session::check_no_overlap(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                               const std::vector<TensorView>& out) const {
  // On every call with output buffers: no allocation unless it throws. The
  // sizes were checked (no overflow) when the values were made.
  auto bytes_of = [](const TensorView& v) -> size_t {
    if (v.data == nullptr || v.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) return 0;
    size_t n = element_size(v.type);
    for (int64_t d : v.shape) n *= d > 0 ? static_cast<size_t>(d) : 0;
    return n;
  };
  auto overlap = [](const TensorView& a, size_t an, const TensorView& b, size_t bn) {
    const auto* ab = static_cast<const unsigned char*>(a.data);
    const auto* bb = static_cast<const unsigned char*>(b.data);
    return an != 0 && bn != 0 && ab < bb + bn && bb < ab + an;
  };
  auto what = [&](size_t k) { return label("output buffer for", outputs_[outputs.empty() ? k : outputs[k]].name); };
  for (size_t k = 0; k < out.size(); ++k) {
    const size_t kn = bytes_of(out[k]);
    if (kn == 0) continue;
    for (size_t j = 0; j < k; ++j)
      if (overlap(out[k], kn, out[j], bytes_of(out[j])))
        throw InvalidInputError(what(k) + " and " + what(j) + " overlap in memory: give each output its own buffer");
    for (size_t i = 0; i < inputs.size(); ++i)
      if (overlap(out[k], kn, inputs[i], bytes_of(inputs[i])))
        throw InvalidInputError(what(k) + " overlaps " + label("input", inputs_[i].name) +
                                ": onnxruntime would overwrite an input it is still reading");
  }
}

std::vector<Ort::Value> Session::run(const std::vector<TensorView>& inputs, const std::vector<size_t>& outputs,
                                     const std::vector<TensorView>& out) const {
  if (inputs.size() != inputs_.size())
    throw InvalidInputError("the model takes " + std::to_string(inputs_.size()) + " inputs, got " +
                            std::to_string(inputs.size()));
  try {
    Feeds feeds;
    input_values(inputs, feeds);
    const std::vector<const char*>& in_names = feeds.omitted ? feeds.names : input_names_;

    std::vector<const char*> selected_names;
    const std::vector<const char*>& out_names = outputs.empty() ? output_names_ : selected_names;
    if (!outputs.empty()) {
      selected_names.reserve(outputs.size());
      for (size_t idx : outputs) {
        if (idx >= outputs_.size()) throw InvalidInputError("output index " + std::to_string(idx) + " out of range");
        selected_names.push_back(output_names_[idx]);
      }
    }
    if (!out.empty() && out.size() != out_names.size())
      throw InvalidInputError("got " + std::to_string(out.size()) + " output buffers for " +
                              std::to_string(out_names.size()) + " outputs");

    std::vector<Ort::Value> out_values;
    out_values.reserve(out_names.size());
    for (size_t k = 0; k < out_names.size(); ++k) {
      if (!out.empty() && (out[k].data != nullptr || out[k].type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED)) {
        const size_t idx = outputs.empty() ? k : outputs[k];
        check_output_buffer(idx, out[k]);
        out_values.push_back(wrap(out[k], "output buffer for", outputs_[idx].name));
      } else {
        out_values.emplace_back(nullptr);
      }
    }

    if (!out.empty()) check_no_overlap(inputs, outputs, out);

    session_.Run(Ort::RunOptions{nullptr}, in_names.data(), feeds.values.data(), feeds.values.size(),
                 out_names.data(), out_values.data(), out_values.size());
    return out_values;
  } catch (const Ort::Exception& e) {
    // onnxruntime's words for a caller buffer whose shape is not the output's
    // (newer runtimes, then older ones); other failures that mention a shape are not.
    const std::string msg = e.what();
    if (!out.empty() && (msg.find("output OrtValue provided for output") != std::string::npos ||
                         msg.find("attempting to re-use buffer") != std::string::npos))
      throw InvalidInputError("an output buffer does not have the output's shape: " + msg);
    rethrow_run_error(e);
  }
}

}  // namespace fastort
