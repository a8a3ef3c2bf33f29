#include "fastort/runtime.h"
#include "fastort/runtime_log.h"

#include <dlfcn.h>

#include <memory>
#include <mutex>

#include "fastort/errors.h"

namespace fastort {
namespace {

std::mutex g_mutex;
Runtime* g_runtime = nullptr;  // set once; deliberately never destroyed (see load())

std::string fix_hint() {
  return "install or upgrade the runtime with `pip install -U onnxruntime` (or onnxruntime-gpu), "
         "or point FASTORT_ORT_LIBRARY at a libonnxruntime.so of version 1." +
         std::to_string(ORT_API_VERSION) + " or newer";
}

}  // namespace

Runtime::Runtime(Key, std::string path, void* handle, std::string version)
    : path_(std::move(path)),
      handle_(handle),
      version_(std::move(version)),
      cpu_memory_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)),
      allocator_(nullptr) {
  Ort::ThrowOnError(Ort::GetApi().GetAllocatorWithDefaultOptions(&allocator_));
}

Runtime& Runtime::load(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_runtime != nullptr) {
    if (g_runtime->path_ == path) return *g_runtime;
    throw RuntimeLoadError("onnxruntime is already loaded from " + g_runtime->path_ +
                           "; a process can load only one (asked for " + path + ")");
  }
  dlerror();
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    throw RuntimeLoadError("cannot load onnxruntime from " + path + ": " +
                           (why ? why : "unknown error") + "; " + fix_hint());
  }
  using GetApiBaseFn = const OrtApiBase* (*)();
  auto get_api_base = reinterpret_cast<GetApiBaseFn>(dlsym(handle, "OrtGetApiBase"));
  if (get_api_base == nullptr) {
    throw RuntimeLoadError(path + " does not export OrtGetApiBase: it is not a libonnxruntime "
                           "shared library; " + fix_hint());
  }
  const OrtApiBase* base = get_api_base();
  std::string version = base->GetVersionString();
  const OrtApi* api = base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    throw RuntimeLoadError("onnxruntime " + version + " at " + path +
                           " is too old: fastort needs API version " +
                           std::to_string(ORT_API_VERSION) + " (onnxruntime 1." +
                           std::to_string(ORT_API_VERSION) + ") or newer; " + fix_hint());
  }
  Ort::InitApi(api);
  try {
    // Deliberately leaked: the runtime lives until the process ends, because
    // onnxruntime's own static state may be torn down before our destructors run.
    auto rt = std::make_unique<Runtime>(Key{}, path, handle, std::move(version));
    g_runtime = rt.release();
  } catch (const Ort::Exception& e) {
    throw RuntimeLoadError(std::string("onnxruntime failed to initialise: ") + e.what());
  }
  return *g_runtime;
}

Ort::Env& Runtime::env() {
  std::lock_guard<std::mutex> lock(env_mutex_);
  if (!env_) {
    Ort::ThreadingOptions threading;
    threading.SetGlobalIntraOpNumThreads(threads_.intra_op_threads);
    threading.SetGlobalInterOpNumThreads(threads_.inter_op_threads);
    threading.SetGlobalSpinControl(threads_.allow_spinning ? 1 : 0);
    // onnxruntime's log lines go to a queue the Python package drains (runtime_log.h).
    env_ = std::make_unique<Ort::Env>(threading, &runtime_log_callback, nullptr, ORT_LOGGING_LEVEL_WARNING, "fastort");
  }
  return *env_;
}

void Runtime::configure_global_threads(const GlobalThreadOptions& options) {
  std::lock_guard<std::mutex> lock(env_mutex_);
  if (env_) throw Error("onnxruntime's global thread pools already exist: configure them before the first engine");
  if (options.intra_op_threads < 0 || options.inter_op_threads < 0) throw Error("thread counts must be >= 0");
  threads_ = options;
}

GlobalThreadOptions Runtime::global_threads() const {
  std::lock_guard<std::mutex> lock(env_mutex_);
  return threads_;
}

Runtime& Runtime::get() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_runtime == nullptr) {
    throw RuntimeLoadError("onnxruntime is not loaded: call fastort::Runtime::load(path) first");
  }
  return *g_runtime;
}

bool Runtime::is_loaded() noexcept {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_runtime != nullptr;
}

RuntimeInfo Runtime::info() const {
  return RuntimeInfo{version_, path_, ORT_API_VERSION, Ort::GetAvailableProviders()};
}

}  // namespace fastort
