"""Hook implementations of the ot plugin."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_matchers():
    from weightlab_ot.matcher import OTFusion

    return [OTFusion]
