"""The ray executor's registration and parameters (the engine itself runs in
tests/test_executors_engines.py against a private Ray head)."""

from __future__ import annotations

import pickle

import pytest
from weightlab import plugins
from weightlab.errors import ParamError
from weightlab.executors import StepFailed, WorkerLost


def test_registered_with_validated_parameters():
    reg = plugins.registry()
    assert reg.entry("executors", "ray").plugin == "ray"
    ex = reg.create("executors", "ray", {"address": "10.0.0.1:6379", "gpus": "0.5"})
    assert (ex.params.address, ex.params.gpus, ex.params.cpus) == ("10.0.0.1:6379", 0.5, 1.0)
    with pytest.raises(ParamError, match="cpus"):
        reg.create("executors", "ray", {"cpus": "-2"})


def test_step_errors_cross_process_boundaries_intact():
    """Ray and submitit pickle exceptions raised in workers."""
    for err in (StepFailed("a", "ValueError: x"), WorkerLost("b", "killed by signal 9")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
