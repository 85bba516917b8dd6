"""Hook implementations of the sinkhorn plugin."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_matchers():
    from weightlab_sinkhorn.matcher import SinkhornRebasin

    return [SinkhornRebasin]
