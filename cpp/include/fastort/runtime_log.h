// onnxruntime's own log lines, captured instead of printed to stderr.
//
// The environment is created with onnxruntime's custom logging callback
// (CreateEnvWithCustomLoggerAndGlobalThreadPools); the callback only appends
// the line to a bounded queue under a mutex: it never calls into Python or
// takes the GIL, so it cannot deadlock whatever thread logs (onnxruntime's
// pools, a batcher worker, interpreter shutdown). The Python package drains
// the queue into the `fastort.onnxruntime` logger (see runtime/logs.py).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fastort/runtime.h"

namespace fastort {

struct RuntimeLogLine {
  int severity = 0;  // OrtLoggingLevel: 0 verbose ... 4 fatal
  std::string category, logid, location, message;
};

// The callback handed to onnxruntime (param unused).
void ORT_API_CALL runtime_log_callback(void* param, OrtLoggingLevel severity, const char* category,
                                       const char* logid, const char* code_location, const char* message);

// Takes the queued lines (oldest first); `dropped` gets how many were lost to
// the bound since the last call.
std::vector<RuntimeLogLine> drain_runtime_log(uint64_t& dropped);

constexpr size_t kRuntimeLogCapacity = 4096;

}  // namespace fastort
