// Plugin execution providers (onnxruntime's "EP ABI", API 22+) and the devices
// onnxruntime enumerates for them.
//
// A plugin EP is a shared library (e.g. onnxruntime-ep-openvino's) that
// onnxruntime loads into its environment. Registration here is once per
// process and per name, thread-safe, and never undone: onnxruntime requires
// that no session uses a library when it is unregistered, and sessions may
// live as long as the process. Everything is plain structs: no Python types.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fastort {
namespace ep {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// Lowest onnxruntime C API fastort runs on at all (see Runtime::load).
constexpr int kMinApiVersion = 21;
// RegisterExecutionProviderLibrary, GetEpDevices, SessionOptionsAppendExecutionProvider_V2,
// SessionOptionsSetEpSelectionPolicy and the EpDevice_/HardwareDevice_ accessors.
constexpr int kPluginApiVersion = 22;
// SessionGetEpDeviceForInputs (what an automatically selected session got).
constexpr int kEpForInputsApiVersion = 23;

struct PluginSupport {
  int api_version = 0;           // the C API version negotiated with the loaded runtime
  int api_version_compiled = 0;  // ORT_API_VERSION of the headers
  bool plugin_eps = false;       // plugin EP libraries and device discovery usable
  std::string reason;            // why not ("" when they are)
};
PluginSupport plugin_support();

// One OrtEpDevice: an execution provider paired with a hardware device.
struct EpDevice {
  std::string ep_name;
  std::string ep_vendor;
  std::string device_type;  // "cpu", "gpu", "npu" or "unknown"
  std::string vendor;
  uint32_t vendor_id = 0;
  uint32_t device_id = 0;
  KeyValues ep_metadata;      // e.g. OpenVINO's ov_device, OPTIMIZATION_CAPABILITIES
  KeyValues ep_options;       // the EP's default options for this device
  KeyValues device_metadata;  // the hardware device's metadata
  std::string library;        // registration name of the plugin library ("" for built-in EPs)
};

struct Registration {
  std::string name;
  std::string path;
  std::vector<std::string> ep_names;  // EPs whose devices appeared when it was registered
};

// Registers the plugin EP library at `path` under `name` in onnxruntime's
// environment. Returns false when that name is already registered with the
// same path (nothing done). Throws Error when plugin EPs are unsupported by
// the runtime, the name is taken by another path, or onnxruntime cannot load
// the library (with onnxruntime's reason).
bool register_library(const std::string& name, const std::string& path);
std::vector<Registration> registrations();

// Every EP device onnxruntime sees now (built-in EPs' too). Empty when the
// runtime has no plugin support.
std::vector<EpDevice> devices();

// True when `ep_name` comes from a registered plugin library (whether or not
// it has a device).
bool is_plugin_ep(const std::string& ep_name);

// Appends plugin EP `ep_name` to `so` with SessionOptionsAppendExecutionProvider_V2
// on one of its devices. The option "device_type" (fastort's, not passed on)
// chooses the device: the first whose EP metadata "ov_device" or hardware type
// equals it (case-insensitive), else the EP's first device. The other options
// go to the EP as they are. Returns false when `ep_name` is not a plugin EP;
// throws Error when it has no (matching) device.
bool append_plugin(Ort::SessionOptions& so, const std::string& ep_name, const KeyValues& options);

// Sets onnxruntime's automatic EP selection: "prefer_cpu", "prefer_gpu",
// "prefer_npu", "max_performance", "max_efficiency", "min_overall_power" or
// "default". Throws Error for another name or a runtime without the API.
void set_selection_policy(Ort::SessionOptions& so, const std::string& policy);

// The EPs of a session's inputs' devices (onnxruntime's record of what it
// selected), as "EPName(ov_device or type)"; empty when the runtime cannot tell.
std::vector<std::string> session_eps(const Ort::Session& session);

}  // namespace ep
}  // namespace fastort
