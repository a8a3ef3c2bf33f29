"""Whether ``padding=`` is exact for a model, checked at engine start.

Padding is exact only for a model whose outputs for a request do not depend
on how far its padded dims were extended (and whose outputs carry the padded
dims under the same symbolic names, so that the engine can cut them back).
Attention without a mask, pooling/means over the padded axis, convolutions
across the padded end, or an output length named differently from the input
length are not: those get a warning at start, and with ``padding_check`` one
request is run alone and padded, and the engine refuses (or warns) when the
two differ.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .. import _core
    from .engine import IOSpec

_LENGTH = 3  # the request's own length along a padded dim
_EXTRA = 2   # how much the check pads it by
_FREE = 2    # any other free dim


def unlinked_padded_dims(inputs: Sequence["IOSpec"], outputs: Sequence["IOSpec"],
                         padding: Mapping[str, Mapping[int, float]]) -> List[str]:
    """Padded input dims whose symbolic name no output dim carries ("x dim 1 ('seq')")."""
    out_names = {d for o in outputs if o.shape is not None for d in o.shape if isinstance(d, str)}
    by_name = {i.name: i for i in inputs}
    found = []
    for name, dims in padding.items():
        spec = by_name.get(name)
        if spec is None or spec.shape is None:
            continue
        for dim in dims:
            label = spec.shape[dim] if 0 <= dim < len(spec.shape) else None
            if not isinstance(label, str) or label not in out_names:
                found.append(f"{name} dim {dim} ({label!r})")
    return found


def _feeds(inputs: Sequence["IOSpec"], padding: Mapping[str, Mapping[int, float]], batch_axis: int,
           seed: int = 0) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """One request (alone) and the same request padded by _EXTRA along each padded dim."""
    rng = np.random.default_rng(seed)
    alone: Dict[str, np.ndarray] = {}
    padded: Dict[str, np.ndarray] = {}
    for spec in inputs:
        if spec.dtype is None or spec.shape is None:
            raise ValueError(f"input {spec.name!r} is not a tensor")
        pads = padding.get(spec.name, {})
        shape = []
        for d, dim in enumerate(spec.shape):
            shape.append(1 if d == batch_axis else dim if isinstance(dim, int) else _LENGTH if d in pads else _FREE)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            x = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            x = rng.integers(1, 4, size=shape).astype(dtype)
        elif dtype.kind == "b":
            x = np.ones(shape, dtype)
        else:
            raise ValueError(f"input {spec.name!r} has dtype {dtype}, which the check does not make")
        alone[spec.name] = x
        widths = [(0, _EXTRA if d in pads else 0) for d in range(len(shape))]
        values = [float(pads[d]) for d in pads]
        padded[spec.name] = np.pad(x, widths, constant_values=values[0] if values else 0) if pads else x
    return alone, padded


def compare_padded(core: "_core.Engine", inputs: Sequence["IOSpec"], outputs: Sequence["IOSpec"],
                   padding: Mapping[str, Mapping[int, float]], batch_axis: int) -> Optional[str]:
    """Runs one request alone and padded; what differs ("" when they agree),
    or None when the check could not run (inputs it cannot make, or a failing run)."""
    try:
        alone_feed, padded_feed = _feeds(inputs, padding, batch_axis)
        alone = core.run(alone_feed)
        padded = core.run(padded_feed)
    except Exception:  # the model needs inputs the check cannot guess
        return None
    padded_names = {i.shape[d] for i in inputs if i.shape is not None for d in padding.get(i.name, {})
                    if d < len(i.shape) and isinstance(i.shape[d], str)}
    for spec in outputs:
        a, p = np.asarray(alone[spec.name]), np.asarray(padded[spec.name])
        if spec.shape is not None and a.ndim == p.ndim == len(spec.shape):
            cut = tuple(slice(0, a.shape[d]) if spec.shape[d] in padded_names else slice(None) for d in range(a.ndim))
            p = p[cut]
        if a.shape != p.shape:
            return f"output {spec.name!r} has shape {a.shape} alone but {p.shape} padded"
        if a.dtype.kind in "fc":
            if not np.allclose(a, p, rtol=1e-4, atol=1e-5, equal_nan=True):
                diff = float(np.max(np.abs(a.astype(np.float64) - p.astype(np.float64))))
                return f"output {spec.name!r} differs by up to {diff:.3g} when its input is padded"
        elif not np.array_equal(a, p):
            return f"output {spec.name!r} differs when its input is padded"
    return ""


def check_padding(core: "_core.Engine", inputs: Sequence["IOSpec"], outputs: Sequence["IOSpec"],
                  padding: Mapping[str, Mapping[int, float]], batch_axis: int, mode: Union[bool, str],
                  source: str) -> None:
    """The start-up checks of ``padding=`` (see the module docstring). ``mode``:
    True refuses (ConfigError) a model whose padded outputs differ, "warn" warns,
    False skips the run (the name check still warns)."""
    if mode not in (True, False, "warn"):
        raise ConfigError(f"padding_check must be True, False or 'warn', got {mode!r}")
    if not padding:
        return
    unlinked = unlinked_padded_dims(inputs, outputs, padding)
    if unlinked:
        warnings.warn(f"fastort: {source}: padded {', '.join(unlinked)} map to no output dim by name: "
                      "outputs cannot be cut back to each request's length, and padding is exact only if "
                      "the model ignores the padded positions", stacklevel=4)
    if mode is False:
        return
    verdict = compare_padded(core, inputs, outputs, padding, batch_axis)
    if verdict is None:
        warnings.warn(f"fastort: {source}: padding_check could not run the model on made-up inputs; "
                      "padding is not checked", stacklevel=4)
        return
    if verdict:
        message = (f"{source}: padding changes the results ({verdict}): the model is not invariant to padding; "
                   "batch without padding=, or pass padding_check='warn' to serve padded batches anyway")
        if mode == "warn":
            warnings.warn("fastort: " + message, stacklevel=4)
        else:
            raise ConfigError(message)

