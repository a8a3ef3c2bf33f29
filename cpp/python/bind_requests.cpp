// A request's Python arguments as the core takes them: the inputs (a dict, a
// list/tuple or one array) as TensorViews, the output names as indices, and
// the out= buffers as views over the caller's arrays.
#include "bind.h"

#include "fastort/errors.h"

namespace fastort {
namespace bind {

std::string names_of(const std::vector<IOInfo>& ios) {
  std::string s;
  for (const auto& io : ios) s += (s.empty() ? "" : ", ") + io.name;
  return s.empty() ? "none" : s;
}

void parse_inputs(const Session& model, const std::vector<py::str>& input_names, size_t max_request_bytes,
                  py::handle inputs, std::vector<Held>& held, std::vector<TensorView>& views) {
  const auto& ins = model.inputs();
  const size_t n = ins.size();
  RequestBudget budget{max_request_bytes, 0};
  if (PyDict_Check(inputs.ptr())) {
    size_t found = 0;
    std::string missing;
    for (size_t i = 0; i < n; ++i) {
      PyObject* item = PyDict_GetItemWithError(inputs.ptr(), input_names[i].ptr());
      if (item == nullptr) {
        if (PyErr_Occurred()) throw py::error_already_set();
        missing += (missing.empty() ? "'" : ", '") + ins[i].name + "'";
        continue;
      }
      ++found;
      views[i] = view_of_input(item, ins[i], held[i], &budget);
    }
    if (!missing.empty() || found != static_cast<size_t>(PyDict_Size(inputs.ptr()))) {
      std::string unknown;
      for (auto kv : py::reinterpret_borrow<py::dict>(inputs)) {
        const std::string key = text_of(kv.first);
        if (!py::isinstance<py::str>(kv.first) || model.input_index(key) < 0)
          unknown += (unknown.empty() ? "'" : ", '") + key + "'";
      }
      std::string msg;
      if (!missing.empty()) msg = "missing input " + missing;
      if (!unknown.empty()) msg += (msg.empty() ? "" : "; ") + std::string("unknown input ") + unknown;
      throw InvalidInputError(msg + " (model inputs: " + names_of(ins) + ")");
    }
  } else if (PyList_Check(inputs.ptr()) || PyTuple_Check(inputs.ptr()) ||
             (n == 1 && (py::isinstance<py::array>(inputs) || py::hasattr(inputs, "__dlpack_device__") ||
                         py::hasattr(inputs, "__cuda_array_interface__")))) {
    py::sequence seq = PyList_Check(inputs.ptr()) || PyTuple_Check(inputs.ptr())
                           ? py::reinterpret_borrow<py::sequence>(inputs)
                           : py::sequence(py::make_tuple(inputs));
    if (static_cast<size_t>(seq.size()) != n)
      throw InvalidInputError("the model takes " + std::to_string(n) + " inputs (" + names_of(ins) + "), got " +
                              std::to_string(seq.size()));
    for (size_t i = 0; i < n; ++i)
      views[i] = view_of_input(seq[i], ins[i], held[i], &budget);
  } else {
    throw InvalidInputError("inputs must be a dict of name -> value (numpy array; list, dict or None for sequence, "
                            "map and optional inputs) or a list/tuple in input order (" +
                            names_of(ins) + "), got " + type_name(inputs));
  }
}

std::vector<size_t> select_outputs(const Session& model, py::handle outputs) {
  const auto& outs = model.outputs();
  std::vector<size_t> selected;
  if (outputs.is_none()) {
    for (size_t k = 0; k < outs.size(); ++k) selected.push_back(k);
    return selected;
  }
  if (py::isinstance<py::str>(outputs) || py::isinstance<py::bytes>(outputs) || !py::isinstance<py::iterable>(outputs))
    throw InvalidInputError("outputs must be a list of output names, got " + type_name(outputs));
  for (py::handle name : outputs) {
    const std::string s = text_of(name);
    const auto idx = model.output_index(s);
    if (idx < 0 || !py::isinstance<py::str>(name))
      throw InvalidInputError("unknown output '" + s + "' (model outputs: " + names_of(outs) + ")");
    selected.push_back(static_cast<size_t>(idx));
  }
  if (selected.empty())
    throw InvalidInputError("outputs is empty: name at least one output (model outputs: " + names_of(outs) +
                            "), or pass None for all");
  return selected;
}

std::vector<TensorView> parse_out(const Session& model, py::handle out, const std::vector<size_t>& selected,
                                  std::vector<py::object>& out_arrays) {
  std::vector<TensorView> out_views;
  if (out.is_none()) return out_views;
  const auto& outs = model.outputs();
  if (!PyDict_Check(out.ptr())) throw InvalidInputError("out must be a dict of output name -> numpy array");
  out_views.resize(selected.size());
  for (auto kv : py::reinterpret_borrow<py::dict>(out)) {
    const std::string key = text_of(kv.first);
    const auto idx = model.output_index(key);
    size_t k = 0;
    while (k < selected.size() && static_cast<std::ptrdiff_t>(selected[k]) != idx) ++k;
    if (idx < 0 || k == selected.size()) {
      std::string requested;
      for (size_t s : selected) requested += (requested.empty() ? "" : ", ") + outs[s].name;
      throw InvalidInputError("out has a buffer for '" + key + "', which is not a requested output (requested: " +
                              (requested.empty() ? "none" : requested) + ")");
    }
    const std::string what = "output buffer for '" + key + "'";
    if (!py::isinstance<py::array>(kv.second))
      throw InvalidInputError(what + ": expected a numpy.ndarray, got " + type_name(kv.second));
    auto arr = py::reinterpret_borrow<py::array>(kv.second);
    if (!(arr.flags() & py::array::c_style) || !arr.writeable() ||
        (arr.dtype().byteorder() == '>' && arr.itemsize() > 1))
      throw InvalidInputError(what + " must be a writeable, C-contiguous array in native byte order");
    TensorView v;
    v.type = type_of(arr.dtype());
    v.data = arr.mutable_data();
    for (py::ssize_t d = 0; d < arr.ndim(); ++d) v.shape.push_back(static_cast<int64_t>(arr.shape(d)));
    model.check_output_buffer(static_cast<size_t>(idx), v);
    out_views[k] = std::move(v);
    out_arrays[k] = arr;
  }
  return out_views;
}

}  // namespace bind
}  // namespace fastort
