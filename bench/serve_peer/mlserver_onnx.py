"""An MLServer runtime that runs an ONNX model with onnxruntime: the peer of
``fastort serve`` in bench/bench_serve.py (loaded by MLServer, in its own venv)."""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(self.settings.parameters.extra.get("threads", 0)) if (
            self.settings.parameters and self.settings.parameters.extra) else 0
        self.session = ort.InferenceSession(self.settings.parameters.uri, opts, providers=["CPUExecutionProvider"])
        self._input_name = self.session.get_inputs()[0].name
        self._output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        ys = self.session.run(self._output_names, {self._input_name: np.ascontiguousarray(x, np.float32)})
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output(n, y)
                                                                  for n, y in zip(self._output_names, ys)])
