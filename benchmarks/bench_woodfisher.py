"""WoodFisher one-shot pruning: time and peak memory of weightlab's pruner, its Fisher inverse
against the textbook sequential rank-one Woodbury recursion on the same gradients, and a sweep
over sparsities with the Fisher computed once against recomputed at every sparsity.

The reference (:func:`weightlab_woodfisher.blocks.woodbury_sequential`) runs the paper's
recursion F_n⁻¹ = F_{n-1}⁻¹ − F_{n-1}⁻¹g gᵀF_{n-1}⁻¹ / (N + gᵀF_{n-1}⁻¹g), all blocks at once,
one sample at a time, from all N × P per-sample gradients held in memory. weightlab's path
accumulates G_bᵀG_b per block (one bmm per chunk of samples) and inverts all blocks with a
batched Cholesky factorization. Before any time is compared, both inverses must give the same
masks (OBS scores ρ_q = w_q²/(2[F⁻¹]_qq), joint selection) and the same updated weights.

Sweep (``--parts sweep``): ``weightlab.pruning.sweep`` with one pruner (``analyze`` once:
gradients and F⁻¹, then scores and the OBS update per sparsity) against a fresh one-shot run
per sparsity (what sweeps did before); first the masks and weights of both must be identical
(torch.equal) at every sparsity, then the times.

Streamed (``--parts streamed``): the same pruner with every Fisher block resident (groups=1)
and streamed in G groups (``--groups``, default 4; or planned under ``--memory-budget-gb``),
with the same gradient chunk; mask differences and max |Δw| first, then time and the memory
each run adds (CPU: resident set size; CUDA: allocated bytes), and the planned peaks.

Prune (``--parts prune``): the pruner alone as configured, for models whose blocks or stored
gradients do not fit — ResNet-50 with B = 2000 is 188 GB of blocks, so it runs streamed;
progress per group goes to stderr. ``--plan`` prints the memory plan (resident or streamed,
groups, gradient passes, planned peak per stage) and exits without computing anything.

``--parts auto`` (the default): inverse, sweep and streamed when the resident plan and the
reference's N × P stored gradients fit the budget, else prune.

    python -m benchmarks.bench_woodfisher [--quick] [--device cuda] [--model cifar_resnet20]
        [--samples 1000] [--block-size 128] [--sparsity 0.9] [--threads N] [--out FILE]
        [--parts auto|inverse,sweep,streamed,prune] [--sweep 0.5,0.7,0.8,0.9,0.95]
        [--groups G] [--memory-budget-gb X] [--grad-chunk C] [--plan]

Random-init weights (seed 0); real CIFAR-10 images when ../shared/data has them, else the
``synthetic`` dataset. ``--quick``: cifar_resnet8, N = 128, B = 64 (seconds on a CPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

# streamed groups allocate tens of GB of blocks, free them and allocate again next to chunks of
# varying size: expandable segments keep the CUDA caching allocator from fragmenting (read when
# CUDA initializes, so set before torch is imported; a value the caller set wins)
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402

from benchmarks.common import environment, shared_data, sync


def _data(samples: int, device: str):
    from weightlab.data.bundle import load_data

    root = shared_data()
    if root is not None and (root / "cifar10" / "cifar10_jpeg_bytes.npz").is_file():
        from weightlab import testing

        bundle = load_data("cifar10", data_dir=testing.cifar10_dir(), device=device)
    else:
        bundle = load_data("synthetic", device=device, params={"n_train": max(samples, 512)})
    return bundle, bundle.loader("calibration", num_samples=samples, batch_size=250)


def obs_prune(finv, layout, names, params, sparsity, masks):
    """Scores, joint masks and OBS update from a given block inverse (the shared tail)."""
    from weightlab import pruning
    from weightlab.pruners import split_flat

    w = torch.cat([params[n].detach().flatten() for n in names]).to(finv.dtype)
    diag = layout.to_flat(torch.diagonal(finv, dim1=-2, dim2=-1))
    new = pruning.masks_from_scores(split_flat(w.square() / (2 * diag), names, params), sparsity,
                                    masks, "joint")
    keep = torch.cat([new[n].flatten() for n in names])
    v = layout.to_blocks(torch.where(keep, 0.0, w / diag))
    w = w - layout.to_flat(torch.bmm(finv, v.unsqueeze(-1)).squeeze(-1))
    return keep, torch.where(keep, w, 0.0)


def run_case(model_name: str, device: str, samples: int, block_size: int, sparsity: float,
             damping: float = 1e-5) -> dict:
    from weightlab import pruning
    from weightlab_woodfisher.blocks import (
        BlockLayout,
        accumulate_gram,
        invert_blocks,
        woodbury_sequential,
    )
    from weightlab_woodfisher.gradients import stack_grads
    from weightlab_woodfisher.meter import StageMeter

    dev = torch.device(device)
    reg, bundle, loader, net = _setup(model_name, device, samples)
    row = {"model": model_name, "device": device, "samples": samples, "block_size": block_size,
           "sparsity": sparsity, "data": bundle.name}

    warm = reg.create("pruners", "woodfisher", {"samples": 2, "block_size": block_size})
    warm.prune(copy.deepcopy(net), sparsity, {}, loader)  # one-time costs (torch.func, BLAS)

    # 1. weightlab's pruner end to end (streams the gradients)
    pruner = reg.create("pruners", "woodfisher", {"samples": samples, "block_size": block_size,
                                                  "damping": damping})
    pruned = copy.deepcopy(net)
    sync(dev)
    t0 = time.perf_counter()
    masks = pruner.prune(pruned, sparsity, {}, loader)
    sync(dev)
    row["pruner_s"] = time.perf_counter() - t0
    row["plan"] = pruner.last_report["plan"]
    row["stages"] = pruner.last_report["stages"]

    # 2. the same gradients, stored, for both inverse paths
    names = pruning.prunable_names(net)
    params = dict(net.named_parameters())
    layout = BlockLayout.build([params[n].numel() for n in names], block_size)
    row["params"], row["num_blocks"] = sum(layout.sizes), layout.num_blocks
    meter = StageMeter(dev)
    with meter.stage("gradients"):
        grads_blocked = layout.to_blocks(stack_grads(net, names, loader, samples, chunk=64))
    with meter.stage("batched"):
        gram = torch.zeros(layout.num_blocks, block_size, block_size, device=dev)
        for chunk in grads_blocked.split(256):
            accumulate_gram(gram, chunk)
        finv_batched = invert_blocks(gram, samples, damping)
    with meter.stage("sequential"):
        finv_seq = woodbury_sequential(grads_blocked, damping)
    row["reference"] = meter.stages

    # 3. agreement first: masks and updated weights from both inverses
    old = pruning.full_masks(net, names, {})
    keep_b, w_b = obs_prune(finv_batched, layout, names, params, sparsity, old)
    keep_s, w_s = obs_prune(finv_seq, layout, names, params, sparsity, old)
    keep_p = torch.cat([masks[n].flatten() for n in names])
    row["mask_mismatch_vs_sequential"] = int((keep_b != keep_s).sum())
    row["mask_mismatch_pruner_vs_batched"] = int((keep_p != keep_b).sum())
    scale = finv_seq.abs().amax(dim=(1, 2), keepdim=True)
    row["finv_max_rel_diff"] = float(((finv_batched - finv_seq).abs() / scale).max())
    agree = keep_b == keep_s
    row["weights_max_abs_diff"] = float((w_b - w_s)[agree].abs().max())
    elt, padded = 4, layout.padded
    row["tensor_bytes"] = {  # what each path must hold at once, by construction
        "batched": layout.num_blocks * block_size ** 2 * elt
        + row["plan"]["grad_chunk"] * padded * elt,
        "sequential": layout.num_blocks * block_size ** 2 * elt + samples * padded * elt}
    row["speedup_inverse"] = row["reference"]["sequential"]["seconds"] / \
        row["reference"]["batched"]["seconds"]
    return row


def sweep_case(model_name: str, device: str, samples: int, block_size: int,
               sparsities: list[float], damping: float = 1e-5) -> dict:
    """The same sweep twice: the analysis computed once and reused, then recomputed by a fresh
    one-shot run per sparsity; identical masks and weights first, then the times."""
    from weightlab import pruning

    dev = torch.device(device)
    reg, bundle, loader, net = _setup(model_name, device, samples)
    values = {"samples": samples, "block_size": block_size, "damping": damping}
    # one full-size run first, so neither side pays the one-time costs (torch.func, BLAS,
    # first-touch pages)
    reg.create("pruners", "woodfisher", values).prune(copy.deepcopy(net), sparsities[0], {},
                                                      loader)

    # The recomputing side runs inside the sweep's callback, right after the sweep's result at
    # the same sparsity, so both sides see the same machine load (a shared CPU varies several
    # fold); the callback's time is taken out of the sweep's.
    reused: dict[float, tuple] = {}
    recomputed: dict[float, tuple] = {}
    recomputed_prune_s: list[float] = []
    in_callback = [0.0]

    def recompute(s, model, masks, _rec) -> None:
        t = time.perf_counter()
        reused[s] = (model, masks)
        ref_model, ref_masks, rec = pruning.one_shot(
            net, reg.create("pruners", "woodfisher", values), s, pruner_data=loader)
        sync(dev)
        recomputed[s] = (ref_model, ref_masks)
        recomputed_prune_s.append(rec["seconds"]["prune"])
        in_callback[0] += time.perf_counter() - t

    sync(dev)
    t0 = time.perf_counter()
    records = pruning.sweep(net, reg.create("pruners", "woodfisher", values), sparsities,
                            pruner_data=loader, on_result=recompute)
    sync(dev)
    reused_s = time.perf_counter() - t0 - in_callback[0]
    recomputed_s = in_callback[0]

    def same(s: float) -> bool:
        (ma, ka), (mb, kb) = reused[s], recomputed[s]
        sb = mb.state_dict()
        return (ka.keys() == kb.keys() and all(torch.equal(ka[n], kb[n]) for n in ka)
                and all(torch.equal(t, sb[k]) for k, t in ma.state_dict().items()))

    return {"model": model_name, "device": device, "samples": samples, "block_size": block_size,
            "data": bundle.name, "sparsities": sparsities,
            "identical": {str(s): same(s) for s in sparsities},
            "reused_s": reused_s, "recomputed_s": recomputed_s,
            "analyze_s": records[0]["seconds"]["analyze"],
            "prune_s": [r["seconds"]["prune"] for r in records],
            "recomputed_prune_s": recomputed_prune_s,
            "analysis_stages": records[0]["pruner_report"]["analysis_stages"],
            "speedup": recomputed_s / reused_s}


def _setup(model_name: str, device: str, samples: int):
    from weightlab import plugins

    bundle, loader = _data(samples, device)
    reg = plugins.registry()
    torch.manual_seed(0)
    net = reg.create("models", model_name).build(bundle.input_shape, bundle.num_classes)
    return reg, bundle, loader, net.to(torch.device(device)).eval()


def _measured(pruner, net, sparsity, loader, dev) -> tuple[object, dict, dict]:
    """Prune a copy of ``net``; the pruned model, its masks and time + added memory."""
    from weightlab_woodfisher.meter import StageMeter

    model = copy.deepcopy(net)
    meter = StageMeter(dev)
    start = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    with meter.stage("prune"):
        masks = pruner.prune(model, sparsity, {}, loader)
    run = meter.stages["prune"]
    if dev.type == "cuda":  # the pruner's own stage meters reset the CUDA peak: take theirs
        peak = max(st["peak_bytes"] for st in pruner.last_report["stages"].values())
        run = {**run, "peak_bytes": peak, "extra_bytes": max(0, peak - start)}
    return model, masks, run


def streamed_case(model_name: str, device: str, samples: int, block_size: int,
                  sparsity: float, groups: int, budget_gb: float | None, grad_chunk: int,
                  precision: str, damping: float = 1e-5) -> dict:
    """Resident (groups=1) against streamed (``groups`` > 0 forced, else planned under
    ``budget_gb``), same gradient chunk (0: the smallest the streamed plan chooses, so that it
    keeps to its budget): agreement first, then time and memory."""
    dev = torch.device(device)
    reg, bundle, loader, net = _setup(model_name, device, samples)
    values = {"samples": samples, "block_size": block_size, "damping": damping,
              "grad_chunk": grad_chunk, "precision": precision}
    streamed_values = {**values, "groups": groups} if groups else \
        {**values, "memory_budget_gb": budget_gb}
    if not grad_chunk:
        grad_chunk = reg.create("pruners", "woodfisher", streamed_values).plan_for(
            net, loader)["grad_chunk"]
        values["grad_chunk"] = streamed_values["grad_chunk"] = grad_chunk
    reg.create("pruners", "woodfisher", {**streamed_values, "samples": 2}).prune(
        copy.deepcopy(net), sparsity, {}, loader)  # one-time costs (torch.func, BLAS)
    sync(dev)
    # streamed first: on a CPU the resident run's larger pages could otherwise be reused
    s_pruner = reg.create("pruners", "woodfisher", streamed_values)
    s_model, s_masks, s_run = _measured(s_pruner, net, sparsity, loader, dev)
    r_pruner = reg.create("pruners", "woodfisher", {**values, "groups": 1})
    r_model, r_masks, r_run = _measured(r_pruner, net, sparsity, loader, dev)
    rs = r_model.state_dict()
    row = {"model": model_name, "device": device, "samples": samples,
           "block_size": block_size, "sparsity": sparsity, "data": bundle.name,
           "grad_chunk": grad_chunk, "precision": precision,
           "mask_mismatch": sum(int((s_masks[n] != r_masks[n]).sum()) for n in r_masks),
           "weights_max_abs_diff": max(float((t - rs[k]).abs().max())
                                       for k, t in s_model.state_dict().items())}
    for label, pruner, run in (("resident", r_pruner, r_run), ("streamed", s_pruner, s_run)):
        rep = pruner.last_report
        row[label] = {"seconds": run["seconds"], "added_bytes": run["extra_bytes"],
                      "peak_bytes": run["peak_bytes"], "plan": rep["plan"],
                      "stages": rep["stages"], "gradient_passes": rep["gradient_passes"]}
    return row


def prune_case(model_name: str, device: str, samples: int, block_size: int, sparsity: float,
               groups: int, budget_gb: float | None, grad_chunk: int, precision: str,
               plan_only: bool, damping: float = 1e-5) -> dict:
    """The pruner alone (for a model whose reference does not fit); ``plan_only``: its plan."""
    from weightlab import pruning

    dev = torch.device(device)
    reg, bundle, loader, net = _setup(model_name, device, samples)
    values = {"samples": samples, "block_size": block_size, "damping": damping,
              "grad_chunk": grad_chunk, "groups": groups, "memory_budget_gb": budget_gb,
              "precision": precision}
    pruner = reg.create("pruners", "woodfisher", values)
    names = pruning.prunable_names(net)
    row = {"model": model_name, "device": device, "samples": samples,
           "block_size": block_size, "sparsity": sparsity, "data": bundle.name,
           "precision": precision, "plan": pruner.plan_for(net, loader)}
    _print_plan(row["plan"], model_name, samples)
    if plan_only:
        return row
    # one-time costs on the head alone (two samples), not on the whole model
    reg.create("pruners", "woodfisher", {**values, "samples": 2, "modules": [names[-1]]}
               ).prune(copy.deepcopy(net), sparsity, {}, loader)
    t0 = time.perf_counter()
    pruner.progress = lambda msg: print(f"  [{time.perf_counter() - t0:8.1f} s] {msg}",
                                        file=sys.stderr, flush=True)
    model, masks, run = _measured(pruner, net, sparsity, loader, dev)
    rep = pruner.last_report
    zeros = sum(int((~m).sum()) for m in masks.values())
    row.update({"seconds": run["seconds"], "added_bytes": run["extra_bytes"],
                "peak_bytes": run["peak_bytes"], "stages": rep["stages"],
                "gradient_passes": rep["gradient_passes"],
                "sparsity_reached": zeros / sum(m.numel() for m in masks.values())})
    return row


def _print_plan(p: dict, model: str, samples: int) -> None:
    gib = 2 ** 30
    print(f"plan for {model}: P = {p['params']:,} weights, {p['num_blocks']:,} blocks of "
          f"{p['block_size']} ({p['blocks_bytes'] / gib:.2f} GiB), N = {samples}; budget "
          f"{p['budget_bytes'] / gib:.2f} GiB ({p['budget_from']})")
    if p["streamed"]:
        print(f"  streamed: {p['groups']} groups of ≤ {p['group_bytes'] / gib:.2f} GiB, "
              f"{p['passes']} gradient passes ({p['groups']} for diag F⁻¹ and the scores, "
              f"{p['passes'] - p['groups']} for the OBS update)")
    else:
        print("  resident: every block in memory, one gradient pass")
    print(f"  gradient chunks of {min(p['group_chunks'])}–{max(p['group_chunks'])} samples, "
          f"inverse {p['inverse_group']}+ blocks at a time; planned peak: "
          + ", ".join(f"{k} {v / gib:.2f} GiB" for k, v in p["peak_bytes"].items()), flush=True)


def _print_streamed(r: dict) -> None:
    mib = 2 ** 20
    res, st = r["resident"], r["streamed"]
    print(f"streamed vs resident ({r['model']}, N = {r['samples']}, B = {r['block_size']}, "
          f"sparsity {r['sparsity']}, chunk {r['grad_chunk']}): {r['mask_mismatch']} masks "
          f"differ, max |Δw| {r['weights_max_abs_diff']:.1e}")
    for label, x in (("resident", res), ("streamed", st)):
        p = x["plan"]
        print(f"  {label:<9} {p['groups']:>3} group(s), {x['gradient_passes']:>2} gradient "
              f"passes: {x['seconds']:7.2f} s, added memory {x['added_bytes'] / mib:7.0f} MiB "
              f"(planned peak {p['planned_peak_bytes'] / mib:.0f} MiB, blocks "
              f"{p['group_bytes'] / mib:.0f} MiB at once)", flush=True)


def _print_prune(r: dict) -> None:
    mib = 2 ** 20
    print(f"pruned {r['model']} to {r['sparsity_reached']:.4f} in {r['seconds']:.1f} s "
          f"({r['gradient_passes']} gradient passes), added memory "
          f"{r['added_bytes'] / mib:.0f} MiB")
    for k, v in r["stages"].items():
        print(f"  {k:<16}{v['seconds']:10.2f} s{v['peak_bytes'] / mib:10.0f} MiB peak",
              flush=True)


def _auto_parts(model: str, device: str, samples: int, block: int, budget_gb, groups,
                precision: str) -> set:
    """inverse, sweep, streamed when the resident plan and the reference's stored gradients
    fit the budget; else prune (the pruner alone)."""
    reg, _, loader, net = _setup(model, device, samples)
    p = reg.create("pruners", "woodfisher", {"samples": samples, "block_size": block,
                                             "memory_budget_gb": budget_gb, "groups": groups,
                                             "precision": precision}).plan_for(net, loader)
    reference = p["blocks_bytes"] * 2 + samples * p["num_blocks"] * block * 4  # float32
    return {"inverse", "sweep", "streamed"} if not p["streamed"] and \
        reference < p["budget_bytes"] else {"prune"}


def _print_sweep(r: dict) -> None:
    ok = all(r["identical"].values())
    print(f"sweep over {', '.join(f'{s:g}' for s in r['sparsities'])} ({r['model']}, "
          f"N = {r['samples']}, B = {r['block_size']}): masks and weights "
          + ("identical at every sparsity" if ok else f"DIFFER: {r['identical']}"))
    st = r["analysis_stages"]
    print(f"  analysis reused: {r['reused_s']:.2f} s (analyze once {r['analyze_s']:.2f} s: "
          f"gradients {st['gradients']['seconds']:.2f} s, inverse {st['inverse']['seconds']:.2f}"
          f" s; then {sum(r['prune_s']):.2f} s scores + updates)")
    print(f"  recomputed per sparsity: {r['recomputed_s']:.2f} s ("
          + ", ".join(f"{t:.2f}" for t in r["recomputed_prune_s"])
          + f" s) → {r['speedup']:.1f}× faster with the analysis reused", flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_woodfisher",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="cifar_resnet8, N=128, B=64")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="default cifar_resnet20 (quick: resnet8)")
    ap.add_argument("--samples", type=int, default=None, help="N (default 1000; quick 128)")
    ap.add_argument("--block-size", type=int, default=None, help="B (default 128; quick 64)")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--threads", type=int, help="CPU threads for torch")
    ap.add_argument("--out", help="write the results as JSON to this file")
    ap.add_argument("--parts", default="auto",
                    help="inverse (pruner + batched vs sequential inverse), sweep (analysis "
                         "reused vs recomputed per sparsity), streamed (resident vs streamed "
                         "blocks), prune (the pruner alone), comma-separated; auto: the first "
                         "three when the resident reference fits the budget, else prune")
    ap.add_argument("--sweep", default="0.5,0.7,0.8,0.9,0.95",
                    help="sparsities of the sweep part")
    ap.add_argument("--groups", type=int, default=0,
                    help="groups of Fisher blocks (streamed part: forced, default 4; prune "
                         "part: the pruner's groups, 0 = planned from the budget)")
    ap.add_argument("--memory-budget-gb", type=float, default=None,
                    help="the pruner's memory_budget_gb (default: 90%% of free CUDA memory, "
                         "4 GiB on CPU)")
    ap.add_argument("--grad-chunk", type=int, default=0,
                    help="samples per gradient chunk (0: from the budget; streamed part: the "
                         "streamed plan's smallest, the same on both sides)")
    ap.add_argument("--precision", default="auto", choices=("auto", "float32", "float64"),
                    help="Fisher blocks of the streamed and prune parts; auto: float64 when "
                         "N < B (see below), else float32")
    ap.add_argument("--plan", action="store_true",
                    help="print the pruner's memory plan and exit (nothing computed)")
    args = ap.parse_args(argv)
    known = {"inverse", "sweep", "streamed", "prune"}
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - known - {"auto"} or ("auto" in parts and len(parts) > 1):
        ap.error(f"--parts {args.parts!r}: expected auto or some of {', '.join(sorted(known))}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or ("cifar_resnet8" if args.quick else "cifar_resnet20")
    samples = args.samples or (128 if args.quick else 1000)
    block = args.block_size or (64 if args.quick else 128)
    # N < B: every G_bᵀG_b is rank-deficient, and with large gradients its float32 rounding
    # (~ε·‖G_bᵀG_b/N‖) exceeds λ = 1e-5 — the random-init ResNet-50's head (B = 2000, N = 8)
    # fails Cholesky in float32 and in float64 after float32 accumulation, and where it does
    # not fail the float32 diagonal of F⁻¹ can be far off (synthetic gradients, B = 256,
    # N = 8: up to 214% against the exact inverse; within 2e-7 with float64 blocks)
    precision = args.precision if args.precision != "auto" else \
        "float64" if samples < block else "float32"
    if args.plan:
        parts = {"prune"}
    elif parts == {"auto"}:
        parts = _auto_parts(model, args.device, samples, block, args.memory_budget_gb,
                            args.groups, precision)
        print(f"--parts auto: {', '.join(sorted(parts))}", file=sys.stderr)
    rows = []
    if "inverse" in parts:
        rows.append(run_case(model, args.device, samples, block, args.sparsity))
        _print_inverse(rows[-1], samples, block, args.sparsity)
    if "sweep" in parts:
        sparsities = [float(v) for v in args.sweep.split(",") if v.strip()]
        rows.append(sweep_case(model, args.device, samples, block, sparsities))
        _print_sweep(rows[-1])
    if "streamed" in parts:
        rows.append(streamed_case(model, args.device, samples, block, args.sparsity,
                                  args.groups or (0 if args.memory_budget_gb else 4),
                                  args.memory_budget_gb, args.grad_chunk, precision))
        _print_streamed(rows[-1])
    if "prune" in parts:
        rows.append(prune_case(model, args.device, samples, block, args.sparsity, args.groups,
                               args.memory_budget_gb, args.grad_chunk, precision, args.plan))
        if not args.plan:
            _print_prune(rows[-1])
    env = environment(torch.device(args.device))
    print(f"device: {env['device']}" + (f" ({env['gpu']})" if "gpu" in env else "")
          + f", {env['threads']} CPU threads, torch {env['torch']}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"benchmark": "woodfisher", "quick": args.quick, "env": env,
                       "rows": rows}, f, indent=2, default=str)
    return rows


def _print_inverse(row: dict, samples: int, block: int, sparsity: float) -> None:
    mib = 2 ** 20
    print(f"{row['model']} on {row['data']}: P = {row['params']:,} weights, "
          f"{row['num_blocks']:,} blocks of {block}, N = {samples}, sparsity {sparsity}")
    print(f"masks: batched vs sequential differ in {row['mask_mismatch_vs_sequential']} of "
          f"{row['params']:,} (pruner vs batched: {row['mask_mismatch_pruner_vs_batched']}); "
          f"max rel. F⁻¹ diff {row['finv_max_rel_diff']:.1e}; max |Δw| on agreeing weights "
          f"{row['weights_max_abs_diff']:.1e}")
    print(f"{'stage':<34}{'seconds':>10}{'peak MiB':>11}{'added MiB':>11}")
    for label, st in [*((f"pruner: {k}", v) for k, v in row["stages"].items()),
                      ("stored gradients (N × P)", row["reference"]["gradients"]),
                      ("inverse, batched Cholesky", row["reference"]["batched"]),
                      ("inverse, sequential Woodbury", row["reference"]["sequential"])]:
        print(f"{label:<34}{st['seconds']:>10.2f}{st['peak_bytes'] / mib:>11.0f}"
              f"{st['extra_bytes'] / mib:>11.0f}")
    tb = row["tensor_bytes"]
    print(f"tensors held at once: batched {tb['batched'] / mib:.0f} MiB (blocks + one chunk of "
          f"{row['plan']['grad_chunk']} gradients), sequential {tb['sequential'] / mib:.0f} MiB "
          f"(blocks + all N gradients)")
    print(f"pruner end to end: {row['pruner_s']:.2f} s; inverse speed-up batched vs sequential "
          f"Woodbury: {row['speedup_inverse']:.1f}×", flush=True)


if __name__ == "__main__":
    main()
