// Python binding of plugin execution providers and EP devices (ep_devices.h).
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "pool.h"

namespace fastort {

// Adds register_ep_library, ep_devices, ep_registrations and plugin_support to `m`.
void bind_devices(pybind11::module_& m);

// What each replica of `pool` runs on ("OpenVINOExecutionProvider(CPU), CPUExecutionProvider", ...).
std::vector<std::string> replica_providers(const SessionPool& pool);

}  // namespace fastort
