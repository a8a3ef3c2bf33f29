"""The gRPC front end: ``inference.GRPCInferenceService`` on grpcio's asyncio server.

The message classes are those tritonclient generates from Triton's
``grpc_service.proto`` (a superset of KServe's ``grpc_predict_v2.proto`` with the
configuration, statistics and repository extensions): the server and its
clients then share one definition of the wire format (docs/SERVE.md says why).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

import numpy as np

from .protocol import (ProtocolError, check_shape, datatype_of, dtype_of, error_for, from_raw, output_arrays,
                       parse_parameters, raw_bytes)
from .service import EngineTime, Service

#: datatype -> the InferTensorContents field that carries it when not raw
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _params(params: Any) -> Dict[str, Any]:
    out = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, which) if which else None
    return out


def make_servicer(service: Service) -> Any:
    """The GRPCInferenceService servicer over ``service``."""
    import grpc
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2, service_pb2 as pb, service_pb2_grpc

    async def abort(context: Any, error: ProtocolError) -> None:
        await context.abort(grpc.StatusCode[error.grpc_code], str(error))

    def from_contents(where: str, dtype: np.dtype, datatype: str, dims: Any, contents: Any) -> np.ndarray:
        field = _CONTENTS.get(datatype)
        if field is None:
            raise ProtocolError(f"{where}: {datatype} travels only as raw_input_contents")
        values = getattr(contents, field)
        count = int(np.prod(dims)) if dims else 1
        if len(values) != count:
            raise ProtocolError(f"{where}: {field} has {len(values)} elements, shape {list(dims)} needs {count}")
        if datatype == "BYTES":
            arr = np.empty(count, dtype=object)
            arr[:] = list(values)
            return arr.reshape(dims)
        wide = np.array(values)
        arr = wide.astype(dtype)
        if dtype.kind in "iu" and not np.array_equal(arr, wide):
            raise ProtocolError(f"{where}: values out of range for {datatype}")
        return arr.reshape(dims)

    class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=service.ready)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            try:
                service.model(request.name, request.version)
                return pb.ModelReadyResponse(ready=service.ready)
            except ProtocolError:
                return pb.ModelReadyResponse(ready=False)

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            return json_format.ParseDict(service.metadata(), pb.ServerMetadataResponse())

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            try:
                model = service.model(request.name, request.version)
            except ProtocolError as e:
                await abort(context, e)
            return json_format.ParseDict(service.model_metadata(model), pb.ModelMetadataResponse())

        async def ModelConfig(self, request: Any, context: Any) -> Any:
            try:
                model = service.model(request.name, request.version)
            except ProtocolError as e:
                await abort(context, e)
            config = json_format.ParseDict(service.model_config(model), model_config_pb2.ModelConfig())
            return pb.ModelConfigResponse(config=config)

        async def ModelStatistics(self, request: Any, context: Any) -> Any:
            try:
                stats = service.statistics(service.models_for_stats(request.name, request.version))
            except ProtocolError as e:
                await abort(context, e)
            return json_format.ParseDict(stats, pb.ModelStatisticsResponse())

        async def RepositoryIndex(self, request: Any, context: Any) -> Any:
            index = service.repository.index()
            if request.ready:
                index = [m for m in index if m["state"] == "READY"]
            return json_format.ParseDict({"models": index}, pb.RepositoryIndexResponse())

        async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
            import asyncio

            try:
                await asyncio.to_thread(service.repository.load, request.model_name)
            except Exception as e:
                error = error_for(e)
                if error.kind == "internal":
                    error = ProtocolError(f"failed to load '{request.model_name}': {e}", "invalid")
                await abort(context, error)
            return pb.RepositoryModelLoadResponse()

        async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
            import asyncio

            try:
                await asyncio.to_thread(service.repository.unload, request.model_name)
            except Exception as e:
                await abort(context, error_for(e))
            return pb.RepositoryModelUnloadResponse()

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            t0 = time.perf_counter()
            try:
                model = service.model(request.model_name, request.model_version)
                service.begin(model)
            except ProtocolError as e:
                await abort(context, e)
            error: Optional[ProtocolError] = None
            rows = 0
            t_infer = t_out = t0
            engine_time: Optional[EngineTime] = None
            try:
                inputs, outputs, priority, timeout = decode(model, request, context)
                rows = service.rows(model, inputs)
                t_infer = time.perf_counter()
                result, engine_time = await service.run(model, inputs, outputs, priority, timeout)
                t_out = time.perf_counter()
                return encode(model, request, result)
            except ProtocolError as e:
                error = e
            except Exception as e:  # never a crash: the client gets INTERNAL naming it
                error = error_for(e)
            except BaseException:  # the RPC was cancelled (client gone): service.run removed it from the queue
                error = ProtocolError("client cancelled", "cancelled")
                raise
            finally:
                service.end(model, "grpc", error, rows, t0, t_infer, t_out, time.perf_counter(), engine_time)
            await abort(context, error)

    def decode(model: Any, request: Any, context: Any) -> Any:
        where = f"model '{model.name}'"
        params = _params(request.parameters)
        priority, timeout = parse_parameters(where, params, service.priority_levels(model))
        remaining = context.time_remaining()
        if remaining is not None and remaining < 1e8:  # the client's gRPC deadline bounds the queue wait
            timeout = remaining if timeout is None else min(timeout, remaining)
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise ProtocolError(f"{where}: {len(raw)} raw_input_contents for {len(request.inputs)} inputs")
        batched = model.max_batch_size > 0
        inputs: Dict[str, np.ndarray] = {}
        for i, tensor in enumerate(request.inputs):
            spec = service.input_spec(model, tensor.name)
            iwhere = f"{where} input '{tensor.name}'"
            if tensor.name in inputs:
                raise ProtocolError(f"{iwhere}: given twice")
            dtype = dtype_of(tensor.datatype)
            dims = check_shape(model.name, spec, tensor.datatype, list(tensor.shape), batched)
            if raw:
                inputs[tensor.name] = from_raw(iwhere, dtype, dims, raw[i])
            else:
                inputs[tensor.name] = from_contents(iwhere, dtype, tensor.datatype, dims, tensor.contents)
        service.check_inputs(model, inputs)
        outputs: Optional[List[str]] = None
        if request.outputs:
            outputs = [o.name for o in request.outputs]
            for o in request.outputs:
                if "classification" in o.parameters:
                    raise ProtocolError(f"{where}: the classification extension is not supported")
            service.check_outputs(model, outputs)
        return inputs, outputs, priority, timeout

    def encode(model: Any, request: Any, result: Dict[str, Any]) -> Any:
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for name, arr in output_arrays(model.name, result).items():
            out = response.outputs.add()
            out.name = name
            out.datatype = datatype_of(arr.dtype)
            out.shape.extend(arr.shape)
            raw = raw_bytes(arr)
            response.raw_output_contents.append(raw if isinstance(raw, bytes) else raw.tobytes())
        return response

    return Servicer()


def add_to_server(server: Any, service: Service) -> None:
    from tritonclient.grpc import service_pb2_grpc

    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(make_servicer(service), server)
