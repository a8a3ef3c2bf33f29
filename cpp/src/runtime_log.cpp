#include "fastort/runtime_log.h"

#include <deque>
#include <mutex>

namespace fastort {
namespace {

struct Sink {
  std::mutex mu;
  std::deque<RuntimeLogLine> lines;
  uint64_t dropped = 0;
};

// Leaked on purpose: onnxruntime may log during static destruction.
Sink& sink() {
  static Sink* s = new Sink();
  return *s;
}

}  // namespace

void ORT_API_CALL runtime_log_callback(void*, OrtLoggingLevel severity, const char* category, const char* logid,
                                       const char* code_location, const char* message) {
  try {
    RuntimeLogLine line;
    line.severity = static_cast<int>(severity);
    line.category = category ? category : "";
    line.logid = logid ? logid : "";
    line.location = code_location ? code_location : "";
    line.message = message ? message : "";
    Sink& s = sink();
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.lines.size() >= kRuntimeLogCapacity) {
      s.lines.pop_front();
      ++s.dropped;
    }
    s.lines.push_back(std::move(line));
  } catch (...) {
    // Out of memory while logging: the line is lost, onnxruntime goes on.
  }
}

std::vector<RuntimeLogLine> drain_runtime_log(uint64_t& dropped) {
  Sink& s = sink();
  std::lock_guard<std::mutex> lock(s.mu);
  std::vector<RuntimeLogLine> out(std::make_move_iterator(s.lines.begin()), std::make_move_iterator(s.lines.end()));
  s.lines.clear();
  dropped = s.dropped;
  s.dropped = 0;
  return out;
}

}  // namespace fastort
