#include "fastort/runtime.h"
#include "fastort/runtime_log.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <mutex>

#include "fastort/ep_devices.h"
#include "fastort/errors.h"

namespace fastort {
namespace {

std::mutex g_mutex;
Runtime* g_runtime = nullptr;  // set once; deliberately never destroyed (see load())

std::string fix_hint() {
  return "install or upgrade the runtime with `pip install -U onnxruntime` (or onnxruntime-gpu), "
         "or point FASTORT_ORT_LIBRARY at a libonnxruntime.so of version 1." +
         std::to_string(ep::kMinApiVersion) + " or newer (1." + std::to_string(ep::kPluginApiVersion) +
         "+ for plugin execution providers)";
}

// The API version to ask for first: the runtime's own for 1.x releases (C API
// N ships in 1.N), capped at the headers'. Asking for a version the runtime
// lacks makes onnxruntime print an error, so the guess avoids that in the usual case.
int first_api_guess(const std::string& version) {
  int major = 0, minor = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &major, &minor) == 2 && major == 1 && minor > 0)
    return std::min(minor, ORT_API_VERSION);
  return ORT_API_VERSION;
}

}  // namespace

Runtime::Runtime(Key, std::string path, void* handle, std::string version, int api_version)
    : path_(std::move(path)),
      handle_(handle),
      version_(std::move(version)),
      api_version_(api_version),
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
  // The headers' API version, or the highest the runtime offers down to the
  // floor: fastort's core needs nothing newer than kMinApiVersion; the plugin
  // EP functions are used only when the negotiated version has them.
  const OrtApi* api = nullptr;
  int api_version = 0;
  const int guess = first_api_guess(version);
  if (guess >= ep::kMinApiVersion && (api = base->GetApi(guess)) != nullptr) api_version = guess;
  for (int v = ORT_API_VERSION; api == nullptr && v >= ep::kMinApiVersion; --v)
    if ((api = base->GetApi(v)) != nullptr) api_version = v;
  if (api == nullptr) {
    throw RuntimeLoadError("onnxruntime " + version + " at " + path +
                           " is too old: fastort needs C API version " + std::to_string(ep::kMinApiVersion) +
                           " (onnxruntime 1." + std::to_string(ep::kMinApiVersion) + ") or newer; " + fix_hint());
  }
  Ort::InitApi(api);
  try {
    // Deliberately leaked: the runtime lives until the process ends, because
    // onnxruntime's own static state may be torn down before our destructors run.
    auto rt = std::make_unique<Runtime>(Key{}, path, handle, std::move(version), api_version);
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
  return RuntimeInfo{version_, path_, ORT_API_VERSION, api_version_, Ort::GetAvailableProviders()};
}

}  // namespace fastort
