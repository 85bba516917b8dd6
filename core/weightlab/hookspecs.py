"""Hook specifications: one hook per component kind, each returning component classes.

Hooks may be added later; changes to existing hooks are additive only.
"""

from weightlab.markers import hookspec


@hookspec
def weightlab_register_models():
    """Return a list of :class:`weightlab.components.Model` subclasses."""


@hookspec
def weightlab_register_datasets():
    """Return a list of :class:`weightlab.components.Dataset` subclasses."""


@hookspec
def weightlab_register_matchers():
    """Return a list of :class:`weightlab.components.Matcher` subclasses."""


@hookspec
def weightlab_register_normalizers():
    """Return a list of :class:`weightlab.components.Normalizer` subclasses."""


@hookspec
def weightlab_register_pruners():
    """Return a list of :class:`weightlab.components.Pruner` subclasses."""


@hookspec
def weightlab_register_ensembles():
    """Return a list of :class:`weightlab.components.Ensemble` subclasses."""


@hookspec
def weightlab_register_operations():
    """Return a list of operation functions (decorated with
    :func:`weightlab.ops.registry.operation`): what recipes and Python callers run by name."""


@hookspec
def weightlab_register_commands(app):
    """Add CLI commands to ``app`` (the ``typer.Typer`` of ``weightlab``), e.g.
    ``app.command("soup")(soup)``. Import torch only inside the commands: ``weightlab --help``
    registers every plugin's commands."""


@hookspec
def weightlab_register_executors():
    """Return a list of :class:`weightlab.components.Executor` subclasses."""


@hookspec
def weightlab_register_merge_methods():
    """Return a list of :class:`weightlab.components.MergeMethod` subclasses."""
