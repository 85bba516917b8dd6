"""``compare``: every matcher × normalizer combination on the same models and data, one table.

The zoo's methods side by side under one protocol: the checkpoints are loaded once, the
calibration images (the first ``calibration_samples`` training images) and the test set are
the same for every combination, and each row is one merge with equal weights. Per row: the
merged model's test top-1 and loss, the loss barrier at the merge point
(L(merged) − mean of the endpoints' losses: Git Re-Basin's barrier at α = ½ for two models),
and the wall time of aligning + averaging + re-normalizing. A combination that cannot run
(a joint matcher with more than two models, a BatchNorm reset of a model without BatchNorm)
is a row with its one-line reason instead of figures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from weightlab.errors import UsageError, WeightlabError
from weightlab.ops.common import (
    CheckpointLike,
    check_writable,
    component,
    load_bundle,
    load_checkpoints,
    trace_graph,
)
from weightlab.ops.registry import Opt, operation
from weightlab.ops.results import Result


@operation("compare", out="file")
def compare(
    checkpoints: Annotated[list[CheckpointLike], Opt("two or more checkpoints of one "
                                                     "architecture", input=True)],
    matchers: Annotated[list[str], Opt("matchers to compare")] = ("identity", "weight",
                                                                 "activation"),
    normalizers: Annotated[list[str], Opt("normalizers to compare (none: no correction)")] = (
        "none",),
    data: Annotated[str | None, Opt("dataset (default: the checkpoints')")] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    calibration_samples: Annotated[int, Opt("training images for data-driven matchers and "
                                            "normalizers", min=1)] = 4096,
    plot: Annotated[Path | None, Opt("write a bar plot of merged test top-1 here")] = None,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
    force: Annotated[bool, Opt("overwrite existing outputs", runner=True)] = False,
) -> Result:
    """Merge the same models with every matcher × normalizer (equal weights) and tabulate the
    merged test accuracy and loss, the loss barrier and the time of each."""
    from weightlab.merging import merge as run_merge
    from weightlab.metrics import evaluate as run_eval

    if len(checkpoints) < 2:
        raise UsageError(f"checkpoints: compare needs at least two, got {len(checkpoints)}")
    if plot is not None:
        check_writable(plot, force)
    combos = [(m, n) for m in matchers for n in normalizers]
    parts = {(m, n): (component("matchers", m, None), component("normalizers", n, None))
             for m, n in combos}  # unknown names fail here, before anything is loaded
    loaded = load_checkpoints(checkpoints, device)
    bundle = load_bundle(loaded.ckpts[0], data, data_dir, loaded.device)
    calib = bundle.loader("calibration", batch_size=500, num_samples=calibration_samples)
    test = bundle.loader("test", batch_size=1000)
    ends = [run_eval(net, test) for net in loaded.models]
    mean_loss = sum(e["loss"] for e in ends) / len(ends)
    graph = None
    k = len(loaded.models)
    rows: list[dict[str, Any]] = []
    for m_name, n_name in combos:
        m, n = parts[(m_name, n_name)]
        row: dict[str, Any] = {"matcher": m_name, "normalizer": n_name}
        try:
            if m is not None and m.needs_graph and graph is None:
                graph = trace_graph(loaded.models[0], loaded.ckpts[0], loaded.device)
            t0 = time.perf_counter()
            res = run_merge(loaded.models, [1.0 / k] * k, matcher=m, graph=graph,
                            match_data=calib, normalizer=n, calibration=calib)
            seconds = time.perf_counter() - t0
            ev = run_eval(res.model, test)
            row.update(top1=ev["top1"], loss=ev["loss"], barrier=ev["loss"] - mean_loss,
                       seconds=seconds, error=None)
        except WeightlabError as e:
            row.update(top1=None, loss=None, barrier=None, seconds=None,
                       error=str(e).splitlines()[0])
        rows.append(row)
    out = {"checkpoints": loaded.paths,
           "endpoints": [{"model": p, **e} for p, e in zip(loaded.paths, ends, strict=True)],
           "rows": rows, "calibration_samples": calibration_samples}
    if plot is not None:
        from weightlab.plotting import compare_figure

        compare_figure(rows, ends, plot)
        out["plot"] = str(plot)
    return Result(out)
