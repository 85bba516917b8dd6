"""Hook implementations of the zipit plugin."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_matchers():
    from weightlab_zipit.matchers import CCA, ZipIt

    return [ZipIt, CCA]


@hookimpl
def weightlab_register_operations():
    from weightlab_zipit.ops import OPERATIONS

    return OPERATIONS


@hookimpl
def weightlab_register_commands(app):
    from weightlab_zipit.cli import register

    register(app)
