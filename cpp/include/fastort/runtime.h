// Loads libonnxruntime at run time and owns the process-wide onnxruntime state.
//
// fastort is built against onnxruntime's headers only (ORT_API_MANUAL_INIT) and
// dlopen()s the shared library with RTLD_LOCAL, so one build works with whichever
// runtime is installed, and a second copy of onnxruntime in the same process (the
// `onnxruntime` Python module carries its own) does not clash with ours.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace fastort {

struct RuntimeInfo {
  std::string version;         // onnxruntime's version string, e.g. "1.32.0"
  std::string library_path;    // the file that was loaded
  int api_version_compiled;    // ORT_API_VERSION of the headers fastort was built with
  int api_version;             // the C API version negotiated with the loaded runtime (<= compiled)
  std::vector<std::string> providers;  // execution providers this runtime offers
};

// onnxruntime's process-wide thread pools, which sessions opened with
// SessionOptions::use_global_thread_pools share instead of owning their own.
struct GlobalThreadOptions {
  int intra_op_threads = 0;  // 0: one per core
  int inter_op_threads = 0;
  bool allow_spinning = false;  // idle pool threads sleep instead of spinning
};

class Runtime {
 public:
  // Loads the library at `path` once per process and initialises the C++ API.
  // Loading the same path again returns the loaded runtime; another path throws.
  // Throws RuntimeLoadError with a message that says how to fix the problem.
  static Runtime& load(const std::string& path);

  // The loaded runtime; throws RuntimeLoadError if load() has not succeeded.
  static Runtime& get();
  static bool is_loaded() noexcept;

  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // The onnxruntime environment, created on first use with global thread pools
  // configured by configure_global_threads().
  Ort::Env& env();
  // Sets the global pools' sizes; only before the first session. Throws Error after.
  void configure_global_threads(const GlobalThreadOptions& options);
  GlobalThreadOptions global_threads() const;
  OrtAllocator* allocator() const noexcept { return allocator_; }
  const OrtMemoryInfo* cpu_memory() const noexcept { return cpu_memory_; }
  RuntimeInfo info() const;
  // The OrtApi version in use: ORT_API_VERSION, or the runtime's own when it is
  // older (down to ep::kMinApiVersion). Functions of later versions must not be called.
  int api_version() const noexcept { return api_version_; }

  struct Key {  // only load() can construct a Runtime
   private:
    Key() = default;
    friend class Runtime;
  };
  Runtime(Key, std::string path, void* handle, std::string version, int api_version);

 private:
  std::string path_;
  void* handle_;  // dlopen handle; never closed: onnxruntime does not support unloading
  std::string version_;
  int api_version_;
  mutable std::mutex env_mutex_;
  std::unique_ptr<Ort::Env> env_;
  GlobalThreadOptions threads_;
  Ort::MemoryInfo cpu_memory_;
  OrtAllocator* allocator_;  // onnxruntime's default CPU allocator (not owned)
};

}  // namespace fastort
