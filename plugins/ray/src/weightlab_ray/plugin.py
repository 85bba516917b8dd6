"""Hook implementations of the ray plugin."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_executors():
    from weightlab_ray.executor import RayExecutor

    return [RayExecutor]
