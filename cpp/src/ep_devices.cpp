#include "fastort/ep_devices.h"

#include <algorithm>
#include <cctype>
#include <mutex>
#include <set>

#include "fastort/errors.h"
#include "fastort/runtime.h"

namespace fastort {
namespace ep {
namespace {

std::mutex g_mutex;  // guards g_registrations and every registration call
std::vector<Registration> g_registrations;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void require_plugins() {
  PluginSupport s = plugin_support();
  if (!s.plugin_eps) throw Error(s.reason);
}

#if ORT_API_VERSION >= 22  // headers with the plugin EP API (else the stubs at the end)
KeyValues key_values(const OrtKeyValuePairs* kv) {
  KeyValues out;
  if (kv == nullptr) return out;
  const char* const* keys = nullptr;
  const char* const* values = nullptr;
  size_t n = 0;
  Ort::GetApi().GetKeyValuePairs(kv, &keys, &values, &n);
  for (size_t i = 0; i < n; ++i) out.emplace_back(keys[i] ? keys[i] : "", values[i] ? values[i] : "");
  return out;
}

std::string type_name(OrtHardwareDeviceType t) {
  switch (t) {
    case OrtHardwareDeviceType_CPU: return "cpu";
    case OrtHardwareDeviceType_GPU: return "gpu";
    case OrtHardwareDeviceType_NPU: return "npu";
    default: return "unknown";
  }
}

std::string value_of(const KeyValues& kv, const std::string& key) {
  for (const auto& [k, v] : kv)
    if (k == key) return v;
  return "";
}

// The raw device list (owned by onnxruntime's environment). Caller checks support.
std::vector<const OrtEpDevice*> raw_devices() {
  const OrtEpDevice* const* list = nullptr;
  size_t n = 0;
  Ort::ThrowOnError(Ort::GetApi().GetEpDevices(Runtime::get().env(), &list, &n));
  return std::vector<const OrtEpDevice*>(list, list + n);
}

std::set<std::string> ep_names(const std::vector<const OrtEpDevice*>& list) {
  std::set<std::string> names;
  for (const OrtEpDevice* d : list) names.insert(Ort::GetApi().EpDevice_EpName(d));
  return names;
}

EpDevice describe(const OrtEpDevice* d) {
  const OrtApi& api = Ort::GetApi();
  EpDevice out;
  out.ep_name = api.EpDevice_EpName(d);
  const char* vendor = api.EpDevice_EpVendor(d);
  out.ep_vendor = vendor ? vendor : "";
  out.ep_metadata = key_values(api.EpDevice_EpMetadata(d));
  out.ep_options = key_values(api.EpDevice_EpOptions(d));
  const OrtHardwareDevice* hw = api.EpDevice_Device(d);
  if (hw != nullptr) {
    out.device_type = type_name(api.HardwareDevice_Type(hw));
    const char* hv = api.HardwareDevice_Vendor(hw);
    out.vendor = hv ? hv : "";
    out.vendor_id = api.HardwareDevice_VendorId(hw);
    out.device_id = api.HardwareDevice_DeviceId(hw);
    out.device_metadata = key_values(api.HardwareDevice_Metadata(hw));
  }
  for (const Registration& r : g_registrations)
    if (std::find(r.ep_names.begin(), r.ep_names.end(), out.ep_name) != r.ep_names.end()) out.library = r.name;
  return out;
}

// "OpenVINOExecutionProvider(CPU)": the EP and the device it runs on.
std::string label(const OrtEpDevice* d) {
  const EpDevice info = describe(d);
  std::string where = value_of(info.ep_metadata, "ov_device");
  if (where.empty()) where = info.device_type;
  return info.ep_name + "(" + where + ")";
}
#endif

}  // namespace

PluginSupport plugin_support() {
  PluginSupport s;
  s.api_version_compiled = ORT_API_VERSION;
  if (!Runtime::is_loaded()) {
    s.reason = "onnxruntime is not loaded";
    return s;
  }
  const Runtime& rt = Runtime::get();
  s.api_version = rt.api_version();
  if (ORT_API_VERSION < kPluginApiVersion) {
    s.reason = "fastort was built with onnxruntime headers of C API " + std::to_string(ORT_API_VERSION) +
               ", which have no plugin execution providers (API " + std::to_string(kPluginApiVersion) +
               "+): rebuild with newer headers (scripts/fetch_ort_headers.sh)";
  } else if (s.api_version < kPluginApiVersion) {
    s.reason = "onnxruntime " + rt.info().version + " (C API " + std::to_string(s.api_version) +
               ") is too old for plugin execution providers, which need onnxruntime 1." +
               std::to_string(kPluginApiVersion) + " or newer: pip install -U onnxruntime";
  } else {
    s.plugin_eps = true;
  }
  return s;
}

#if ORT_API_VERSION >= 22
bool register_library(const std::string& name, const std::string& path) {
  require_plugins();
  if (name.empty()) throw Error("a plugin EP library needs a registration name");
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const Registration& r : g_registrations) {
    if (r.name != name) continue;
    if (r.path == path) return false;
    throw Error("plugin EP library name '" + name + "' is already registered for " + r.path +
                " (asked for " + path + "); libraries stay registered for the life of the process");
  }
  Ort::Env& env = Runtime::get().env();
  const std::set<std::string> before = ep_names(raw_devices());
  OrtStatus* status = Ort::GetApi().RegisterExecutionProviderLibrary(env, name.c_str(), path.c_str());
  if (status != nullptr) {
    std::string why = Ort::GetApi().GetErrorMessage(status);
    Ort::GetApi().ReleaseStatus(status);
    throw Error("onnxruntime cannot load plugin EP library '" + name + "' from " + path + ": " + why);
  }
  Registration reg{name, path, {}};
  for (const std::string& ep : ep_names(raw_devices()))
    if (!before.count(ep)) reg.ep_names.push_back(ep);
  g_registrations.push_back(std::move(reg));
  return true;
}

std::vector<Registration> registrations() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_registrations;
}

std::vector<EpDevice> devices() {
  if (!plugin_support().plugin_eps) return {};
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<EpDevice> out;
  for (const OrtEpDevice* d : raw_devices()) out.push_back(describe(d));
  return out;
}

bool is_plugin_ep(const std::string& ep_name) {
  if (!plugin_support().plugin_eps) return false;
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const Registration& r : g_registrations)
    if (std::find(r.ep_names.begin(), r.ep_names.end(), ep_name) != r.ep_names.end()) return true;
  return false;
}

bool append_plugin(Ort::SessionOptions& so, const std::string& ep_name, const KeyValues& options) {
  if (!is_plugin_ep(ep_name)) return false;
  std::string wanted;
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : options) {
    if (k == "device_type") {
      wanted = lower(v);
      continue;
    }
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  const OrtEpDevice* chosen = nullptr;
  std::vector<std::string> seen;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (const OrtEpDevice* d : raw_devices()) {
      if (ep_name != Ort::GetApi().EpDevice_EpName(d)) continue;
      const EpDevice info = describe(d);
      const std::string ov = lower(value_of(info.ep_metadata, "ov_device"));
      seen.push_back(ov.empty() ? info.device_type : ov);
      if (chosen == nullptr && (wanted.empty() || wanted == ov || wanted == info.device_type)) chosen = d;
    }
  }
  if (chosen == nullptr) {
    std::string list;
    for (const std::string& s : seen) list += (list.empty() ? "" : ", ") + s;
    if (seen.empty())
      throw Error("plugin execution provider " + ep_name + " is registered but onnxruntime found no device for it "
                  "on this machine");
    throw Error("plugin execution provider " + ep_name + " has no device of type '" + wanted + "' (it has: " +
                list + ")");
  }
  Ort::ThrowOnError(Ort::GetApi().SessionOptionsAppendExecutionProvider_V2(
      so, Runtime::get().env(), &chosen, 1, keys.data(), values.data(), keys.size()));
  return true;
}

void set_selection_policy(Ort::SessionOptions& so, const std::string& policy) {
  require_plugins();
  static const std::vector<std::pair<std::string, OrtExecutionProviderDevicePolicy>> kPolicies = {
      {"default", OrtExecutionProviderDevicePolicy_DEFAULT},
      {"prefer_cpu", OrtExecutionProviderDevicePolicy_PREFER_CPU},
      {"prefer_npu", OrtExecutionProviderDevicePolicy_PREFER_NPU},
      {"prefer_gpu", OrtExecutionProviderDevicePolicy_PREFER_GPU},
      {"max_performance", OrtExecutionProviderDevicePolicy_MAX_PERFORMANCE},
      {"max_efficiency", OrtExecutionProviderDevicePolicy_MAX_EFFICIENCY},
      {"min_overall_power", OrtExecutionProviderDevicePolicy_MIN_OVERALL_POWER},
  };
  for (const auto& [name, value] : kPolicies) {
    if (name != policy) continue;
    Ort::ThrowOnError(Ort::GetApi().SessionOptionsSetEpSelectionPolicy(so, value));
    return;
  }
  std::string names;
  for (const auto& p : kPolicies) names += (names.empty() ? "" : ", ") + p.first;
  throw Error("unknown device policy '" + policy + "': use one of " + names);
}

std::vector<std::string> session_eps(const Ort::Session& session) {
  std::vector<std::string> out;
#if ORT_API_VERSION >= 23
  if (!Runtime::is_loaded() || Runtime::get().api_version() < kEpForInputsApiVersion) return out;
  const size_t n = session.GetInputCount();
  if (n == 0) return out;
  std::vector<const OrtEpDevice*> devices(n, nullptr);
  OrtStatus* status = Ort::GetApi().SessionGetEpDeviceForInputs(session, devices.data(), n);
  if (status != nullptr) {
    Ort::GetApi().ReleaseStatus(status);
    return out;
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const OrtEpDevice* d : devices) {
    if (d == nullptr) continue;
    std::string l = label(d);
    if (std::find(out.begin(), out.end(), l) == out.end()) out.push_back(l);
  }
#else
  (void)session;
#endif
  return out;
}

#else  // headers older than C API 22: no plugin EPs (plugin_support() says why)

bool register_library(const std::string&, const std::string&) {
  require_plugins();
  return false;
}
std::vector<Registration> registrations() { return {}; }
std::vector<EpDevice> devices() { return {}; }
bool is_plugin_ep(const std::string&) { return false; }
bool append_plugin(Ort::SessionOptions&, const std::string&, const KeyValues&) { return false; }
void set_selection_policy(Ort::SessionOptions&, const std::string&) { require_plugins(); }
std::vector<std::string> session_eps(const Ort::Session&) { return {}; }

#endif

}  // namespace ep
}  // namespace fastort
