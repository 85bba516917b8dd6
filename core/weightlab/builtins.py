"""The built-in plugin: registers weightlab's own components through the same hooks as any
third-party plugin (there is no side door)."""

from weightlab.markers import hookimpl


@hookimpl
def weightlab_register_models():
    from weightlab.models.families import MODELS

    return MODELS


@hookimpl
def weightlab_register_datasets():
    from weightlab.data.datasets import DATASETS

    return DATASETS


@hookimpl
def weightlab_register_matchers():
    try:
        from weightlab.matching import MATCHERS
    except ImportError:  # the merging module is optional while it is being built
        return []
    return MATCHERS


@hookimpl
def weightlab_register_operations():
    from weightlab.ops import CORE_OPERATIONS

    return CORE_OPERATIONS


@hookimpl
def weightlab_register_pruners():
    from weightlab.pruners import PRUNERS

    return PRUNERS


@hookimpl
def weightlab_register_executors():
    from weightlab.executors.local import EXECUTORS

    return EXECUTORS
