// fastort's C++ exception types. onnxruntime errors become one of these in the
// core; the Python binding maps each to its Python counterpart.
#pragma once

#include <stdexcept>
#include <string>

namespace fastort {

// Base class of every error fastort raises.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// libonnxruntime could not be found, loaded, or is too old.
class RuntimeLoadError : public Error {
 public:
  using Error::Error;
};

// The model could not be read or onnxruntime refused it.
class ModelLoadError : public Error {
 public:
  using Error::Error;
};

// The caller's inputs (names, dtypes, shapes, output buffers) do not fit the model.
class InvalidInputError : public Error {
 public:
  using Error::Error;
};

// A request is larger than the engine's configured bounds (bytes or rows per
// request), or its size computation overflows. Refused before fastort
// allocates anything for it.
class RequestTooLargeError : public InvalidInputError {
 public:
  using InvalidInputError::InvalidInputError;
};

// onnxruntime failed while running the model.
class RunError : public Error {
 public:
  using Error::Error;
};

}  // namespace fastort

namespace fastort {

// The batcher's queue is at its limit; the request was not accepted.
class QueueFullError : public Error {
 public:
  using Error::Error;
};

// The request's deadline passed before it could run; it was never run.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// The engine (or batcher) was closed before the request could run.
class ClosedError : public Error {
 public:
  using Error::Error;
};

}  // namespace fastort
