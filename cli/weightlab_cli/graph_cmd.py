"""``weightlab graph MODEL|CKPT [--check]``: the channel spaces weightlab traces in a model."""

from __future__ import annotations

import typer

from weightlab_cli.common import JSON_OPT, info, print_json, table


def graph(
    target: str = typer.Argument(..., help="a checkpoint file or a model name"),
    check: bool = typer.Option(False, "--check", help="permute every free space at random "
                               "and compare the outputs (exit 1 if they change)"),
    input_shape: str = typer.Option(None, "--input-shape", help="C,H,W (default: the "
                                    "checkpoint's, else the model's)"),
    num_classes: int = typer.Option(10, "--num-classes"),
    seed: int = typer.Option(0, "--seed", help="seed of the check's permutation"),
    tolerance: float = typer.Option(1e-4, "--tolerance", min=0.0, help="largest relative "
                                    "output change that counts as invariant"),
    json_out: bool = JSON_OPT,
):
    """The model's channel spaces as weightlab traces them (size, free or fixed, producing
    layers, norms, tensor axes) and, with --check, whether permuting every free space leaves
    its outputs unchanged: the first thing to run on one's own model."""
    from weightlab.ops import graph_info as run

    res = run(target, check=check, input_shape=input_shape, num_classes=num_classes,
              seed=seed, tolerance=tolerance).to_json()
    if json_out:
        print_json(res)
    else:
        table(f"channel spaces of {target} at {'×'.join(map(str, res['input_shape']))}",
              ["space", "size", "free", "produced by", "norms", "tensor axes"],
              [[s["id"], _size(s), "free" if s["free"] else f"fixed ({s['reason']})",
                _few(s["producers"]), _few(s["norms"]), s["entries"]] for s in res["spaces"]])
        info(f"{res['free_spaces']} free of {len(res['spaces'])} spaces, {res['layers']} "
             f"conv/linear layers")
        if check:
            c = res["check"]
            verdict = "invariant" if c["invariant"] else "NOT invariant"
            info(f"check: {c['permuted_spaces']} spaces permuted (seed {c['seed']}): max "
                 f"|Δ output| {c['max_abs_diff']:.2e} of {c['max_abs_output']:.2e} "
                 f"(relative {c['relative']:.1e}, tolerance {c['tolerance']:g}): {verdict}")
    if check and not res["check"]["invariant"]:
        raise typer.Exit(1)


def _size(s: dict) -> str:
    """768, or for attention "768 = 12 heads (tied to 5)"."""
    if s.get("heads", 1) <= 1:
        return str(s["size"])
    return f"{s['size']} = {s['heads']} heads" + (f" (tied to {s['tie']})"
                                                  if s.get("tie") is not None else "")


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" … (+{len(names) - n})" if len(names) > n else "")


def register(app: typer.Typer) -> None:
    app.command("graph")(graph)
