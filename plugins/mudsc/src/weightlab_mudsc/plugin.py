"""Hook implementations of the mudsc plugin."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_matchers():
    from weightlab_mudsc.matcher import MuDSC

    return [MuDSC]
