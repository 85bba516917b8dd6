"""Hook implementations of the sparse-soup plugin."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_ensembles():
    from weightlab_sparse_soup.ensembles import ENSEMBLES

    return ENSEMBLES


@hookimpl
def weightlab_register_operations():
    from weightlab_sparse_soup.ops import OPERATIONS

    return OPERATIONS


@hookimpl
def weightlab_register_commands(app):
    from weightlab_sparse_soup.cli import register

    register(app)
