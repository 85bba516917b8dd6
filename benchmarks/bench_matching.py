"""Weight-matching speed: weightlab's matcher against a straightforward reference.

The reference builds each space's similarity with numpy on the CPU (float64), re-slicing
and re-permuting every tensor at every visit, and solves it with scipy in the same visiting
order. Both must reach the same permutations and objective before any time is compared.

    python -m benchmarks.bench_matching [--quick] [--device cuda] [--threads N] [--out FILE]

``--quick`` uses cifar_vgg11 and cifar_resnet20, at most 3 sweeps (seconds on a CPU); the
full run uses cifar_vgg16_bn and cifar_resnet20_4x (``--models`` picks others, e.g.
``--models timm/vit_small_patch16_224 --size 224``: attention-head units, packed and per-head
entries). Two random-init models per architecture (seeds 0, 1).
Nothing is written unless ``--out FILE`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

FULL = ("cifar_vgg16_bn", "cifar_resnet20_4x")
QUICK = ("cifar_vgg11", "cifar_resnet20")


def reference_weight_matching(graph, state_a, state_b, max_iter=100, seed=0, tol=1e-12):
    """Git Re-Basin weight matching written plainly with numpy (the baseline): every visit
    re-slices and re-permutes every tensor of the space. Units of tied attention-head spaces
    are visited together and solved by the plain grouped assignment below."""
    from weightlab.matching.weight import visit_orders

    a = {k: v.detach().cpu().double().numpy() for k, v in state_a.items()}
    b = {k: v.detach().cpu().double().numpy() for k, v in state_b.items()}
    units = graph.units()
    axes = graph.param_axes()
    perms = {s.id: np.arange(s.size) for u in units for s in u}

    def index(t, other, length):  # the whole axis, with space t's channels permuted
        p = perms[t]
        if other.per_group:  # one index per head: the heads' permutation
            d = graph[t].size // graph[t].groups
            p = p.reshape(-1, d)[:, 0] // d
        full = np.arange(length)
        blocks = _blocks(p, other.repeat)
        full[other.offset:other.offset + len(blocks)] = blocks + other.offset
        return full

    def score(space):
        out = np.zeros((space.size, space.size))
        for e in space.entries:
            if e.per_group:
                continue  # per-head tables are left out of S (as weightlab's matcher)
            w_b = b[e.key]
            for t, other in axes[e.key]:
                if other.axis != e.axis:
                    w_b = np.take(w_b, index(t, other, w_b.shape[other.axis]), axis=other.axis)
            n = space.size * e.repeat
            rows_a = np.moveaxis(a[e.key], e.axis, 0)[e.offset:e.offset + n]
            rows_b = np.moveaxis(w_b, e.axis, 0)[e.offset:e.offset + n]
            out += rows_a.reshape(space.size, -1) @ rows_b.reshape(space.size, -1).T
        return out

    sweeps = 0
    for sweeps, order in enumerate(visit_orders(len(units), seed), start=1):
        progress = False
        for i in order:
            unit = units[i]
            scores = [score(s) for s in unit]
            new = _grouped(scores, unit[0].groups)
            before = sum(sc[np.arange(len(sc)), perms[s.id]].sum() for s, sc in zip(unit, scores))
            after = sum(sc[np.arange(len(sc)), p].sum() for sc, p in zip(scores, new))
            progress |= after - before > tol * max(1.0, abs(before))
            for s, p in zip(unit, new):
                perms[s.id] = p
        if not progress or sweeps >= max_iter:
            break
    return {s: torch.from_numpy(p) for s, p in perms.items()}, sweeps


def _grouped(scores, groups):
    """Per pair of heads (g, h) and space k the best within-head assignment; the head
    assignment τ maximising the summed values; each space's permutation from τ."""
    if groups <= 1:
        return [linear_sum_assignment(sc, maximize=True)[1] for sc in scores]
    value = np.zeros((groups, groups))
    inner = {}
    for k, sc in enumerate(scores):
        d = len(sc) // groups
        for g in range(groups):
            for h in range(groups):
                block = sc[g * d:(g + 1) * d, h * d:(h + 1) * d]
                _, p = linear_sum_assignment(block, maximize=True)
                inner[k, g, h] = p
                value[g, h] += block[np.arange(d), p].sum()
    _, tau = linear_sum_assignment(value, maximize=True)
    return [np.concatenate([tau[g] * (len(sc) // groups) + inner[k, g, tau[g]]
                            for g in range(groups)]) for k, sc in enumerate(scores)]


def _blocks(perm, r):
    return (perm[:, None] * r + np.arange(r)).reshape(-1) if r > 1 else perm


def run_case(name: str, device: str, max_iter: int, size: int = 32) -> dict:
    from weightlab import plugins
    from weightlab.alignment import Alignment
    from weightlab.graph import trace
    from weightlab.matching.weight import weight_matching, weight_objective

    comp = plugins.registry().create("models", name)
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(comp.build((3, size, size), 10).eval())
    graph = trace(nets[0], torch.zeros(1, 3, size, size))
    sa, sb = (n.state_dict() for n in nets)
    t0 = time.perf_counter()
    ref_perms, ref_sweeps = reference_weight_matching(graph, sa, sb, max_iter=max_iter)
    t_ref = time.perf_counter() - t0
    ref_obj = weight_objective(graph, sa, Alignment(ref_perms).apply(graph, sb), True)
    dev_a = {k: v.to(device) for k, v in sa.items()}
    dev_b = {k: v.to(device) for k, v in sb.items()}
    row = {"model": name, "device": device, "spaces": len(graph.free_spaces()),
           "ref_s": t_ref, "ref_sweeps": ref_sweeps, "objective": ref_obj}
    for dtype, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
        if device != "cpu":  # warm-up: kernels, allocator
            weight_matching(graph, dev_a, dev_b, max_iter=1, dtype=dtype,
                                include_bn_stats=True)
        t0 = time.perf_counter()
        fast = weight_matching(graph, dev_a, dev_b, max_iter=max_iter, dtype=dtype,
                               include_bn_stats=True)  # the reference counts every entry
        row[f"{tag}_s"] = time.perf_counter() - t0
        row[f"{tag}_same_perms"] = all(torch.equal(fast.perms[s].cpu(), ref_perms[s])
                                       for s in ref_perms)
        row[f"{tag}_rel_objective"] = (fast.info["objective"] - ref_obj) / abs(ref_obj)
        row[f"{tag}_speedup"] = t_ref / row[f"{tag}_s"]
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_matching",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models (seconds on a CPU)")
    ap.add_argument("--device", default="cpu", help="device of weightlab's matcher")
    ap.add_argument("--max-iter", type=int, default=None,
                    help="sweeps at most (default 100; 3 with --quick)")
    ap.add_argument("--models", nargs="+", help="model names (default: by --quick)")
    ap.add_argument("--threads", type=int, help="CPU threads for torch and numpy (BLAS)")
    ap.add_argument("--size", type=int, default=32, help="input height and width (224 for "
                    "timm/vit_small_patch16_224)")
    ap.add_argument("--out", help="write the results as JSON to this file")
    args = ap.parse_args(argv)
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    max_iter = args.max_iter or (3 if args.quick else 100)
    names = args.models or (QUICK if args.quick else FULL)
    rows = [run_case(n, args.device, max_iter, args.size) for n in names]
    print(f"{'model':<20}{'spaces':>7}{'sweeps':>7}{'reference s':>13}{'weightlab f64 s':>17}"
          f"{'×':>7}{'same':>6}{'f32 s':>9}{'×':>7}{'same':>6}{'Δobj f32':>10}")
    for r in rows:
        print(f"{r['model']:<20}{r['spaces']:>7}{r['ref_sweeps']:>7}{r['ref_s']:>13.2f}"
              f"{r['f64_s']:>17.2f}{r['f64_speedup']:>7.1f}{str(r['f64_same_perms']):>6}"
              f"{r['f32_s']:>9.2f}{r['f32_speedup']:>7.1f}{str(r['f32_same_perms']):>6}"
              f"{r['f32_rel_objective']:>10.1e}")
    print(f"device: {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
          + f", {torch.get_num_threads()} CPU threads", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"benchmark": "matching", "quick": args.quick, "max_iter": max_iter,
                       "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
