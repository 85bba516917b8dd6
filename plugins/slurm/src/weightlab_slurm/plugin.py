"""Hook implementations of the slurm plugin."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_executors():
    from weightlab_slurm.executor import SlurmExecutor

    return [SlurmExecutor]
