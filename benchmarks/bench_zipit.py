"""ZipIt!/CCA merge time and a full preserve-first merging sweep (plugin zipit, issue 6).

For two random-init models per architecture (seeds 0, 1) on synthetic calibration images:

- the ONE feature-statistics pass (weightlab.matching.features) that every matcher reuses,
- ZipIt! and CCA from those statistics, and the merged model (Σ_k M_k θ_k U_k),
- ZipIt!'s greedy loop against the reference code's loop (gstoica27/ZipIt
  match_tensors_zipit: delete the zipped row and column and argmax the whole matrix each
  step) on one space of each width — both must return the same assignment first,
- a full PFM sweep: build, (no normalizer) evaluate and count every k = 0 … L−1.

    python -m benchmarks.bench_zipit [--quick] [--device cuda] [--threads N] [--out FILE]

``--quick``: cifar_resnet20 and cifar_vgg11_bn, 1024 calibration images (about 5 minutes on
the shared 2-core CPU); full: cifar_resnet20_4x and cifar_vgg16_bn, 4096 images (``--samples``
and ``--test-images`` shrink them for a CPU). Nothing is written unless ``--out FILE`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks.common import environment, timed

FULL = ("cifar_resnet20_4x", "cifar_vgg16_bn")
QUICK = ("cifar_resnet20", "cifar_vgg11_bn")


def call(fn, device: torch.device, *args):
    """(seconds, result) of ``fn(*args)``, with the device drained before and after."""
    box = []
    return timed(lambda: box.append(fn(*args)), device), box[0]


def bench_model(name: str, device: torch.device, samples: int, test_images: int) -> dict:
    from weightlab import plugins, testing
    from weightlab.graph import trace
    from weightlab.matching.features import collect_feature_stats
    from weightlab_zipit.joint import merged_model
    from weightlab_zipit.pfm import sweep
    from weightlab_zipit.zipit import constant_features_alike, zip_match

    shape = (3, 32, 32)
    models = [testing.tiny_model(name, shape, seed=s).to(device).eval() for s in (0, 1)]
    graph = trace(models[0], torch.zeros(2, *shape, device=device))
    g = torch.Generator(device="cpu").manual_seed(0)
    batches = [(torch.randn(256, *shape, generator=g).to(device), torch.zeros(256).long())
               for _ in range(-(-samples // 256))]
    out: dict = {"model": name, "layers": len(graph.layers),
                 "free_spaces": len(graph.free_spaces()), "calibration_samples": samples}
    out["stats_s"], stats = call(collect_feature_stats, device, models, graph, batches, samples)
    reg = plugins.registry()
    joints = {}
    for matcher in ("zipit", "cca"):
        comp = reg.create("matchers", matcher, {})
        out[f"{matcher}_s"], joints[matcher] = call(comp.from_stats, device, graph, stats)
        out[f"{matcher}_merge_s"], _ = call(merged_model, device, models, graph,
                                            joints[matcher])
    loop = {}
    for size in sorted({s.size for s in graph.free_spaces()}):
        sid = next(s.id for s in graph.free_spaces() if s.size == size)
        corr = constant_features_alike(stats[sid].corr(), stats[sid].cov.diagonal())
        t_ours, (_, ours) = call(zip_match, device, corr)
        t_ref, ref = call(_upstream(), device, corr)
        if not torch.equal(ours, ref):
            raise SystemExit(f"{name}: space {sid} ({size} channels): assignments differ")
        loop[size] = {"weightlab_s": t_ours, "reference_s": t_ref, "speedup": t_ref / t_ours}
    out["zip_loop"] = loop
    test = batches[:max(1, test_images // 256)]
    out["pfm_sweep_s"], res = call(sweep, device, models, graph, joints["zipit"], shape, test,
                                   range(len(graph.layers)))
    out["pfm_k"] = len(res["rows"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--samples", type=int, default=None,
                    help="calibration images (default 1024 quick, 4096 full)")
    ap.add_argument("--test-images", type=int, default=512, help="images per PFM evaluation")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.models or (QUICK if args.quick else FULL)
    samples = args.samples or (1024 if args.quick else 4096)
    rows = []
    for name in names:
        r = bench_model(name, device, samples, args.test_images)
        rows.append(r)
        loop = ", ".join(f"{c}ch {v['weightlab_s']:.3f}s vs {v['reference_s']:.2f}s "
                         f"({v['speedup']:.0f}×)" for c, v in r["zip_loop"].items())
        print(f"{name}: stats {r['stats_s']:.2f}s | zipit {r['zipit_s']:.2f}s + merge "
              f"{r['zipit_merge_s']:.2f}s | cca {r['cca_s']:.2f}s + merge "
              f"{r['cca_merge_s']:.2f}s | PFM sweep of {r['pfm_k']} k {r['pfm_sweep_s']:.1f}s"
              f"\n  greedy loop (weightlab vs reference): {loop}", flush=True)
    result = {"environment": environment(device), "results": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _upstream():
    """The faithful port of upstream's loop that the zipit tests check against."""
    import importlib.util
    from pathlib import Path

    path = (Path(__file__).resolve().parents[1] / "plugins" / "zipit" / "tests"
            / "upstream_zipit.py")
    spec = importlib.util.spec_from_file_location("upstream_zipit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.upstream_zip


if __name__ == "__main__":
    sys.exit(main())

