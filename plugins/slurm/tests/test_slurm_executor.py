"""The slurm executor: registered with its parameters; a clear error where SLURM is absent; a
step that raises in a submitit job is reported with its error and not retried."""

from __future__ import annotations

import shutil

import pytest
from weightlab import plugins
from weightlab.errors import ParamError, WeightlabError
from weightlab.executors import GraphFailed, run_graph


def test_registered_with_validated_parameters():
    reg = plugins.registry()
    assert reg.entry("executors", "slurm").plugin == "slurm"
    ex = reg.create("executors", "slurm", {"partition": "gpu", "gpus": "2", "time": "90"})
    assert (ex.params.partition, ex.params.gpus, ex.params.time) == ("gpu", 2, 90)
    with pytest.raises(ParamError, match="gpus"):
        reg.create("executors", "slurm", {"gpus": "-1"})
    with pytest.raises(ParamError, match="cluster"):
        reg.create("executors", "slurm", {"cluster": "pbs"})


@pytest.mark.skipif(shutil.which("srun") is not None, reason="a real SLURM cluster is here")
def test_without_slurm_the_error_says_so_and_names_the_local_cluster(tmp_path):
    from weightlab_slurm.executor import SlurmExecutor

    spec = {"id": "a", "call": "weightlab.executors.tasks:train", "kwargs": {}, "out": "a.json"}
    with SlurmExecutor() as ex, pytest.raises(WeightlabError, match=r"cluster='local' runs"):
        ex.submit(spec, str(tmp_path))


@pytest.mark.slow
def test_a_step_that_raises_in_its_job_is_reported_not_retried(tmp_path):
    from weightlab_slurm.executor import SlurmExecutor

    spec = {"id": "bad", "call": "weightlab.executors.tasks:evaluate_average",
            "kwargs": {"checkpoints": [str(tmp_path / "none.safetensors")], "data": "digits"},
            "out": "steps/bad.json"}
    logs: list[str] = []
    with SlurmExecutor(cluster="local", poll=0.1) as ex, pytest.raises(GraphFailed) as info:
        run_graph([spec], {}, ex, tmp_path, retries=2, log=logs.append)
    assert "CheckpointError" in info.value.failed["bad"]
    assert not any("running it again" in m for m in logs)
    assert len(list((tmp_path / ".submitit").glob("*_submitted.pkl"))) == 1
