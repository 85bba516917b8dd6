"""The command tree. Modules are imported here but import torch only inside commands, so
``weightlab --help`` stays fast; plugins are registered (not their components) so that their
commands appear."""

import typer

from weightlab_cli import (
    compare_cmd,
    components_cmd,
    evaluate_cmd,
    graph_cmd,
    import_cmd,
    merge_cmd,
    plot_cmd,
    plugins_cmd,
    prune_cmd,
    run_cmd,
    train_cmd,
)

app = typer.Typer(
    name="weightlab", no_args_is_help=True, pretty_exceptions_enable=False,
    add_completion=False,
    help="Weight-space research on trained image classifiers: train, align and merge, "
         "diagnose, repair, prune and soup. Add --debug anywhere for tracebacks.")

app.add_typer(plugins_cmd.app, name="plugins")
app.command("list")(components_cmd.list_components)
app.command("show")(components_cmd.show_component)
app.command("train")(train_cmd.train)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("import")(import_cmd.import_checkpoint)
app.command("plot")(plot_cmd.plot)

# Command groups of their own modules: merge/interpolate/diagnose/flops, prune, run (and
# `plugins new`).
for _module in (merge_cmd, compare_cmd, graph_cmd, prune_cmd, run_cmd):
    _module.register(app)


def _plugin_commands(tree: typer.Typer) -> None:
    """Plugins' commands (``weightlab_register_commands``: sparse-soup's soup/sms, zipit's
    pfm, …). A plugin whose registration fails adds none and is reported by ``weightlab
    plugins list``; the other commands keep working."""
    from weightlab import plugins

    plugins.register_commands(tree)


_plugin_commands(app)


def _one_line_summaries(tree: typer.Typer) -> None:
    """The command panels show each command's first docstring paragraph; rich markup mode
    keeps its source line breaks there, so join them into one line that rich wraps."""
    import inspect

    for info in tree.registered_commands:
        if info.short_help is None and info.help is None and info.callback is not None:
            doc = inspect.getdoc(info.callback) or ""
            info.short_help = " ".join(doc.split("\n\n")[0].split()) or None
    for group in tree.registered_groups:
        if group.typer_instance is not None:
            _one_line_summaries(group.typer_instance)


_one_line_summaries(app)
