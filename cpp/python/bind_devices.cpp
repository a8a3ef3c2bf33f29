// Plugin execution providers and EP devices (fastort/ep_devices.h): registering
// plugin libraries, listing devices, what the runtime supports.
#include "bind.h"

#include "fastort/ep_devices.h"

namespace fastort {
namespace bind {
namespace {

py::dict as_dict(const ep::KeyValues& kv) {
  py::dict d;
  for (const auto& [k, v] : kv) d[py::str(k)] = v;
  return d;
}

py::dict as_dict(const ep::EpDevice& d) {
  py::dict out;
  out["ep_name"] = d.ep_name;
  out["ep_vendor"] = d.ep_vendor;
  out["device_type"] = d.device_type;
  out["vendor"] = d.vendor;
  out["vendor_id"] = d.vendor_id;
  out["device_id"] = d.device_id;
  out["ep_metadata"] = as_dict(d.ep_metadata);
  out["ep_options"] = as_dict(d.ep_options);
  out["device_metadata"] = as_dict(d.device_metadata);
  out["library"] = d.library;
  return out;
}

}  // namespace

void bind_devices(py::module_& m) {
  m.def("plugin_support", []() {
    ep::PluginSupport s = ep::plugin_support();
    py::dict d;
    d["api_version"] = s.api_version;
    d["api_version_compiled"] = s.api_version_compiled;
    d["plugin_eps"] = s.plugin_eps;
    d["reason"] = s.reason;
    d["min_api_version"] = ep::kMinApiVersion;
    d["plugin_api_version"] = ep::kPluginApiVersion;
    return d;
  });
  m.def(
      "register_ep_library",
      [](const std::string& name, const std::string& path) {
        py::gil_scoped_release release;  // onnxruntime loads the library (and its device plugins)
        return ep::register_library(name, path);
      },
      py::arg("name"), py::arg("path"),
      "Register a plugin EP library once per process; False when `name` already has this path.");
  m.def("ep_registrations", []() {
    py::list out;
    for (const ep::Registration& r : ep::registrations())
      out.append(py::make_tuple(r.name, r.path, r.ep_names));
    return out;
  });
  m.def("ep_devices", []() {
    std::vector<ep::EpDevice> list;
    {
      py::gil_scoped_release release;
      list = ep::devices();
    }
    py::list out;
    for (const ep::EpDevice& d : list) out.append(as_dict(d));
    return out;
  });
}

}  // namespace bind
}  // namespace fastort
