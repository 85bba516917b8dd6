"""Tracing and checking the largest torchvision classifiers: how long ``weightlab graph NAME
--check`` takes (issue 15's target: a ViT-B/16 or ConvNeXt-B traced and checked in < 20 s on
the 2-core CPU). The check itself is the correctness test: each model must be invariant.

    python -m benchmarks.bench_tracing [--models vit_b_16 convnext_base …] [--out FILE]

Per model: building it (random init, no download), tracing the feature-space graph at
3×224×224, and the float64 permutation check (two forward passes of a float64 copy).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

DEFAULT = ("vit_b_16", "convnext_base", "swin_b", "efficientnet_b7", "resnet152")


def run_case(name: str) -> dict:
    import torchvision
    from weightlab.graph import trace
    from weightlab.graph.check import permutation_check

    t0 = time.perf_counter()
    net = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    t1 = time.perf_counter()
    graph = trace(net, x)
    t2 = time.perf_counter()
    res = permutation_check(net, graph, x)
    t3 = time.perf_counter()
    if not res["invariant"]:
        raise SystemExit(f"{name}: not permutation-invariant ({res['relative']:.1e})")
    return {"model": name, "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "spaces": len(graph.spaces), "free": len(graph.free_spaces()),
            "build_s": t1 - t0, "trace_s": t2 - t1, "check_s": t3 - t2,
            "relative": res["relative"]}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_tracing",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT))
    ap.add_argument("--out", help="write the results as JSON to this file")
    args = ap.parse_args(argv)
    rows = [run_case(n) for n in args.models]
    print(f"{'model':<18}{'params M':>9}{'free/spaces':>13}{'build s':>9}{'trace s':>9}"
          f"{'check s':>9}{'relative':>10}")
    for r in rows:
        print(f"{r['model']:<18}{r['params_m']:>9.1f}{r['free']:>6}/{r['spaces']:<6}"
              f"{r['build_s']:>9.2f}{r['trace_s']:>9.2f}{r['check_s']:>9.2f}"
              f"{r['relative']:>10.1e}")
    print(f"{torch.get_num_threads()} CPU threads")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"benchmark": "tracing", "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
