// fastort._core.BoundCall: Engine.bind()'s callable for a latency-critical
// loop. It keeps one onnxruntime IoBinding on one replica with the input and
// output names resolved once; an input whose buffer and shape are those of the
// previous call is not bound again, and tensor outputs are written into buffers
// allocated once per input-shape signature (learned from the first call of
// that signature, or given as `shapes`). Calls on one BoundCall are serialized
// by a mutex (safe, not parallel): use one per thread to run in parallel.
#include <atomic>
#include <cstring>
#include <mutex>

#include "bind.h"
#include "fastort/engine.h"
#include "fastort/errors.h"
#include "fastort/runtime.h"

namespace fastort {
namespace bind {
namespace {

std::atomic<size_t> next_replica{0};

class BoundCall {
 public:
  BoundCall(std::shared_ptr<Engine> core, std::vector<size_t> selected, bool copy)
      : core_(std::move(core)),
        session_(core_->pool().replica(next_replica.fetch_add(1) % core_->replicas())),
        binding_(session_.ort()),
        selected_(std::move(selected)),
        copy_(copy) {
    const size_t n = session_.inputs().size();
    for (const auto& io : session_.inputs()) {
      if (io.kind != ValueKind::Tensor)
        throw InvalidInputError("bind() takes models whose inputs are tensors; input '" + io.name + "' is of type " +
                                io.type_string + ": use run()");
      input_names_.push_back(io.name);
    }
    held_.resize(n);
    bound_.resize(n);
    in_values_.resize(n);
    out_arrays_.resize(selected_.size());
    for (size_t k = 0; k < selected_.size(); ++k) {
      const IOInfo& io = session_.outputs()[selected_[k]];
      output_names_.push_back(io.name);
    }
  }

  py::tuple call(const py::args& args) {
    std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) {  // never wait for the mutex holding the GIL: its owner needs the GIL back
      py::gil_scoped_release release;
      lock.lock();
    }
    const auto& ins = session_.inputs();
    if (static_cast<size_t>(args.size()) != ins.size())
      throw InvalidInputError("the model takes " + std::to_string(ins.size()) + " inputs (" + names_of(ins) +
                              "), got " + std::to_string(args.size()));
    bool shapes_changed = !outputs_ready_;
    for (size_t i = 0; i < ins.size(); ++i) {
      Held held;
      TensorView v = view_of_array(args[i], "input", ins[i].name, held, ins[i].type);
      if (!v.device.is_cpu() || v.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING)
        throw InvalidInputError("input '" + ins[i].name + "': a bound call takes host numeric arrays; use run()");
      if (in_values_[i] && v.data == bound_[i].data && v.type == bound_[i].type && v.shape == bound_[i].shape) {
        held_[i] = std::move(held);  // the same buffer: still bound
        continue;
      }
      Ort::Value value = session_.input_value(i, v);
      try {
        binding_.BindInput(input_names_[i].c_str(), value);
      } catch (const Ort::Exception& e) {
        throw InvalidInputError(std::string("onnxruntime rejected the inputs: ") + e.what());
      }
      shapes_changed = shapes_changed || v.shape != bound_[i].shape || v.type != bound_[i].type;
      in_values_[i] = std::move(value);
      bound_[i] = std::move(v);
      held_[i] = std::move(held);
    }
    if (shapes_changed) {
      core_->pool().check_limits(bound_);
      return learn();
    }
    bool ok = true;
    {
      py::gil_scoped_release release;
      ok = run_bound();
    }
    if (!ok) return learn();  // outputs of data-dependent shape: bound anew
    return results();
  }

 private:
  bool run_bound() {
    try {
      session_.ort().Run(Ort::RunOptions{nullptr}, binding_);
      return true;
    } catch (const Ort::Exception&) {
      return false;
    }
  }

  // Runs with onnxruntime allocating every output, then binds buffers of the
  // shapes it produced for the next calls of the same input shapes.
  py::tuple learn() {
    outputs_ready_ = false;
    binding_.ClearBoundOutputs();
    const OrtMemoryInfo* cpu = Runtime::get().cpu_memory();
    for (const auto& name : output_names_) binding_.BindOutput(name.c_str(), cpu);
    std::vector<Ort::Value> values;
    {
      py::gil_scoped_release release;
      try {
        session_.ort().Run(Ort::RunOptions{nullptr}, binding_);
        values = binding_.GetOutputValues();
      } catch (const Ort::Exception& e) {
        const bool input = e.GetOrtErrorCode() == ORT_INVALID_ARGUMENT;
        if (input) throw InvalidInputError(std::string("onnxruntime rejected the inputs: ") + e.what());
        throw RunError(std::string("onnxruntime failed to run the model: ") + e.what());
      }
    }
    py::tuple out(values.size());
    binding_.ClearBoundOutputs();
    out_values_.clear();
    out_values_.resize(values.size());
    for (size_t k = 0; k < values.size(); ++k) {
      out_arrays_[k] = py::object();
      const IOInfo& io = session_.outputs()[selected_[k]];
      Ort::Value& v = values[k];
      if (io.kind == ValueKind::Tensor && v.IsTensor() && io.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING &&
          numpy_allocatable(io.type)) {
        auto info = v.GetTensorTypeAndShapeInfo();
        std::vector<int64_t> shape = info.GetShape();
        std::vector<py::ssize_t> dims(shape.begin(), shape.end());
        py::array a(py::reinterpret_borrow<py::dtype>(dtype_of(io.type)), dims);
        if (a.nbytes() > 0) std::memcpy(a.mutable_data(), v.GetTensorRawData(), static_cast<size_t>(a.nbytes()));
        TensorView view;
        view.type = io.type;
        view.shape = shape;
        view.data = a.mutable_data();
        out_values_[k] = session_.output_value(selected_[k], view);
        binding_.BindOutput(output_names_[k].c_str(), out_values_[k]);
        out_arrays_[k] = a;
        out[k] = copy_ ? copy_of(a) : py::object(a);
      } else {
        binding_.BindOutput(output_names_[k].c_str(), cpu);
        out[k] = owned_to_python(std::move(v));
      }
    }
    outputs_ready_ = true;
    return out;
  }

  // A fresh C-contiguous copy of `a` (new_array: nothing else allocated per call).
  static py::object copy_of(const py::array& a) {
    py::array c = new_array(a.dtype(), static_cast<size_t>(a.ndim()), reinterpret_cast<const int64_t*>(a.shape()));
    if (a.nbytes() > 0) std::memcpy(c.mutable_data(), a.data(), static_cast<size_t>(a.nbytes()));
    return std::move(c);
  }

  py::tuple results() {
    py::tuple out(selected_.size());
    std::vector<Ort::Value> values;
    for (size_t k = 0; k < selected_.size(); ++k) {
      if (out_arrays_[k]) {
        const auto& a = py::reinterpret_borrow<py::array>(out_arrays_[k]);
        out[k] = copy_ ? copy_of(a) : out_arrays_[k];
        continue;
      }
      if (values.empty()) values = binding_.GetOutputValues();
      out[k] = owned_to_python(std::move(values[k]));
    }
    return out;
  }

  std::shared_ptr<Engine> core_;
  Session& session_;
  Ort::IoBinding binding_;
  std::vector<size_t> selected_;
  bool copy_;
  std::mutex mu_;
  std::vector<std::string> input_names_, output_names_;
  std::vector<Held> held_;
  std::vector<TensorView> bound_;
  std::vector<Ort::Value> in_values_;
  std::vector<Ort::Value> out_values_;
  std::vector<py::object> out_arrays_;
  bool outputs_ready_ = false;
};

}  // namespace

py::object make_bound_call(std::shared_ptr<Engine> core, std::vector<size_t> selected, bool copy) {
  return py::cast(std::make_shared<BoundCall>(std::move(core), std::move(selected), copy));
}

void bind_bound(py::module_& m) {
  py::class_<BoundCall, std::shared_ptr<BoundCall>>(m, "BoundCall")
      .def("__call__", &BoundCall::call, "Run with the inputs as positional arrays; returns a tuple of outputs.");
}

}  // namespace bind
}  // namespace fastort
