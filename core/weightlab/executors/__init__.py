"""Where independent work runs. A step is data (:mod:`~weightlab.executors.spec`), one run of
it is :func:`~weightlab.executors.step.run_step`, a graph of them runs through an executor
with :func:`~weightlab.executors.graph.run_graph`. Executors are components (kind
``executors``): ``local`` is built in; ``ray`` and ``slurm`` come from plugins.
"""

from weightlab.executors.graph import GraphFailed, run_graph
from weightlab.executors.spec import StepFailed, WorkerLost, spec_hash
from weightlab.executors.step import run_step

__all__ = ["GraphFailed", "StepFailed", "WorkerLost", "run_graph", "run_step", "spec_hash"]


def create(name: str = "local", values: dict | None = None, registry=None):
    """The executor ``name`` (``plugin:name`` works too) with validated parameters."""
    from weightlab import plugins

    return (registry or plugins.registry()).create("executors", name, values)
