"""Hook implementations of the nmerge plugin."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_matchers():
    from weightlab_nmerge.matcher import C2M3, MergeMany

    return [MergeMany, C2M3]
