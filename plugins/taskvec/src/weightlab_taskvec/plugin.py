"""Hook implementations of the taskvec plugin."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_merge_methods():
    from weightlab_taskvec.methods import METHODS

    return METHODS
