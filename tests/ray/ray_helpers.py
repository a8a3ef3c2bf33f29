"""Code the Ray workers of the test cluster import (tests/ray is on their PYTHONPATH)."""

from __future__ import annotations

import os
import time
from typing import Dict

import numpy as np

from fastort.ray import Predictor

#: Where PidRecordingPredictor leaves its pid and progress files (set by the cluster fixture).
PID_DIR_ENV = "FASTORT_TEST_PID_DIR"


def features(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """8 float32 features computed from the row id, so the driver can recompute them."""
    return {"id": batch["id"], "x": features_of(batch["id"])}


def features_of(ids: np.ndarray) -> np.ndarray:
    k = np.arange(1, 9, dtype=np.float64)
    return np.sin(np.asarray(ids, dtype=np.float64)[:, None] * 0.001 * k).astype(np.float32)


class NodeTaggingPredictor(Predictor):
    """Adds the Ray node id and pid that scored each row."""

    def __call__(self, batch):
        import ray

        out = super().__call__(batch)
        n = len(batch["id"])
        out["node"] = np.full(n, ray.get_runtime_context().get_node_id(), dtype=object)
        out["pid"] = np.full(n, os.getpid(), dtype=np.int64)
        return out


class PidRecordingPredictor(Predictor):
    """Leaves its pid in the pid dir and one progress line per batch; each batch takes >= 20 ms,
    so a job lasts long enough for a test to kill an actor in the middle of it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._dir = os.environ[PID_DIR_ENV]
        open(os.path.join(self._dir, f"pid-{os.getpid()}"), "w").close()

    def __call__(self, batch):
        out = super().__call__(batch)
        time.sleep(0.02)
        with open(os.path.join(self._dir, f"progress-{os.getpid()}"), "a") as f:
            f.write(f"{len(batch['id'])}\n")
        return out
