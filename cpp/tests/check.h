// A minimal test harness for the core's C++ tests: CHECK(cond) records a
// failure with its line and goes on; CHECK_THROWS(expr, Type) expects an
// exception of Type; main() returns report(). No dependency beyond the STL.
#pragma once

#include <cstdio>
#include <string>

namespace fastort_test {

inline int& failures() {
  static int n = 0;
  return n;
}
inline int& checks() {
  static int n = 0;
  return n;
}

inline void fail(const char* file, int line, const std::string& what) {
  ++failures();
  std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
}

inline int report(const char* name) {
  std::printf("%s: %d checks, %d failed\n", name, checks(), failures());
  return failures() == 0 ? 0 : 1;
}

}  // namespace fastort_test

#define CHECK(cond)                                                            \
  do {                                                                         \
    ++fastort_test::checks();                                                  \
    if (!(cond)) fastort_test::fail(__FILE__, __LINE__, #cond);                \
  } while (0)

#define CHECK_THROWS(expr, Type)                                               \
  do {                                                                         \
    ++fastort_test::checks();                                                  \
    bool thrown_ = false;                                                      \
    try {                                                                      \
      (void)(expr);                                                            \
    } catch (const Type&) {                                                    \
      thrown_ = true;                                                          \
    } catch (...) {                                                            \
    }                                                                          \
    if (!thrown_) fastort_test::fail(__FILE__, __LINE__, #expr " throws " #Type); \
  } while (0)
