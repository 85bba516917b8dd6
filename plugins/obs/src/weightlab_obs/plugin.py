"""Hook implementation of the obs plugin. The pruner module imports torch inside its methods,
so listing plugins stays cheap."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_pruners():
    from weightlab_obs.pruner import ObsPruner

    return [ObsPruner]
