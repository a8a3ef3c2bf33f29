#include "fastort/model_scan.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>

namespace fastort {
namespace {

// A cursor over protobuf wire format; every read is bounds-checked.
struct Reader {
  const unsigned char* p;
  const unsigned char* end;

  bool varint(uint64_t& out) {
    out = 0;
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
      const unsigned char b = *p++;
      out |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }

  // Reads one field: its number and wire type; for length-delimited fields
  // `sub` is the payload. Skips the value of the other wire types.
  bool field(uint32_t& number, uint32_t& wire, Reader& sub) {
    uint64_t key = 0;
    if (!varint(key)) return false;
    number = static_cast<uint32_t>(key >> 3);
    wire = static_cast<uint32_t>(key & 7);
    uint64_t v = 0;
    switch (wire) {
      case 0: return varint(v);
      case 1: if (end - p < 8) return false; p += 8; return true;
      case 5: if (end - p < 4) return false; p += 4; return true;
      case 2:
        if (!varint(v) || v > static_cast<uint64_t>(end - p)) return false;
        sub = Reader{p, p + v};
        p += v;
        return true;
      default: return false;  // groups (3, 4) are not used by ONNX
    }
  }
};

// TypeProto -> true when it is a tensor type with a shape of no dims.
bool is_scalar_type(Reader type) {
  uint32_t n = 0, w = 0;
  Reader sub{nullptr, nullptr};
  while (type.p < type.end) {
    if (!type.field(n, w, sub)) return false;
    if (n != 1 || w != 2) continue;  // TypeProto.tensor_type
    Reader tensor = sub;
    bool has_shape = false, has_dim = false;
    while (tensor.p < tensor.end) {
      Reader shape{nullptr, nullptr};
      if (!tensor.field(n, w, shape)) return false;
      if (n != 2 || w != 2) continue;  // Tensor.shape
      has_shape = true;
      while (shape.p < shape.end) {
        Reader dim{nullptr, nullptr};
        if (!shape.field(n, w, dim)) return false;
        if (n == 1) has_dim = true;  // TensorShapeProto.dim
      }
    }
    return has_shape && !has_dim;
  }
  return false;
}

}  // namespace

std::vector<std::string> scalar_inputs_of(const void* data, size_t size) noexcept {
  std::vector<std::string> names;
  if (data == nullptr) return names;
  try {
    Reader model{static_cast<const unsigned char*>(data), static_cast<const unsigned char*>(data) + size};
    uint32_t n = 0, w = 0;
    Reader graph{nullptr, nullptr};
    while (model.p < model.end) {
      if (!model.field(n, w, graph)) return names;
      if (n != 7 || w != 2) continue;  // ModelProto.graph
      Reader g = graph;
      while (g.p < g.end) {
        Reader value_info{nullptr, nullptr};
        if (!g.field(n, w, value_info)) return names;
        if (n != 11 || w != 2) continue;  // GraphProto.input
        std::string name;
        bool scalar = false;
        Reader vi = value_info;
        while (vi.p < vi.end) {
          Reader sub{nullptr, nullptr};
          if (!vi.field(n, w, sub)) break;
          if (w != 2) continue;
          if (n == 1) name.assign(reinterpret_cast<const char*>(sub.p), static_cast<size_t>(sub.end - sub.p));
          if (n == 2) scalar = is_scalar_type(sub);
        }
        if (scalar && !name.empty()) names.push_back(std::move(name));
      }
    }
  } catch (...) {  // std::bad_alloc: report nothing rather than fail the load here
    names.clear();
  }
  return names;
}

std::vector<std::string> scalar_inputs_of_file(const std::string& path) noexcept {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  struct stat st {};
  std::vector<std::string> names;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    const size_t size = static_cast<size_t>(st.st_size);
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map != MAP_FAILED) {
      names = scalar_inputs_of(map, size);
      ::munmap(map, size);
    }
  }
  ::close(fd);
  return names;
}

}  // namespace fastort
