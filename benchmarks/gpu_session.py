"""The whole GPU lease in one run: the parts of issue 18 in priority order inside one total
time guard, each writing its JSON under $OUT as it goes (``benchmarks/gpu_session.sh`` installs
weightlab on the device and calls this).

    python -m benchmarks.gpu_session [--size full|tiny] [--device cuda] [--out DIR]
        [--budget SECONDS | --deadline EPOCH] [--parts a,b,c,d] [--plan] [--peak-tflops T]

(a) training throughput and pair efficiency (benchmarks B1, B3): ``benchmarks.bench_training``
    for ResNet-20 and VGG16-BN, each ratio against the plain DataLoader loop in the same run;
(b) a CIFAR-10 ``cifar_resnet20`` pair (batched engine, fast schedule, target ≥ 91.5 %), its
    midpoint naive (no alignment), weight matched, + BatchNorm reset, + REPAIR (Jordan et al.
    2023, Table 1: 67.6 % at width ×1 with weight matching + REPAIR);
(c) a ``cifar_vgg16_bn`` pair, one-shot global magnitude pruning to 80 % with and without a
    BatchNorm reset (Vanishing Feature notebook: 23.6 % → 92.0 %), then, time permitting, a
    ``cifar_vgg16`` pair and preserve-first merging with CCA for k = 0 … L−1 (81.9 % → 92.9 %);
(d) a ``cifar_resnet20_4x`` pair and its weight matching + REPAIR midpoint (paper: 92.1 %),
    only with time left.

Before the parts: CIFAR-10 is written out of the carried JPEG copy, a start-up probe measures
what each CLI call costs besides arithmetic, and the plan (``benchmarks.gpu_plan``: FLOPs ÷
rate + calls × start-up) is printed. Each part runs in a process of its own, limited to the
time left (``benchmarks.gpu_parts``); the epochs of each training part are chosen from the time
left and the speed part (a) measured; a part whose minimum does not fit is skipped with the
reason. Checkpoints that fit the device tool's limits come back as ``checkpoints.tar.N``
pieces (``cat checkpoints.tar.* > checkpoints.tar``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
from pathlib import Path

from benchmarks import gpu_plan
from benchmarks.gpu_parts import TITLES, OutOfTime, Session

PARTS = ("a", "b", "c", "d")
MIB = 2 ** 20
OUT_FILE_LIMIT = 16 * MIB - 64 * 1024  # the device tool returns files up to 16 MiB
CKPT_SLOTS = 3  # 8 files come back: session.log, a–d.json and 3 checkpoint pieces
TAR_SLACK = 16 * 1024  # the archive's end blocks and its padding to 10 KiB records

PROBE = """
import sys
import torch
import weightlab_cli.app
from weightlab import plugins
from weightlab.data.bundle import load_data
plugins.registry()
torch.zeros(1, device=sys.argv[1]).sum().item()
if sys.argv[2] != "-":
    load_data(sys.argv[2], device=sys.argv[1])
"""


def probe(s: Session, device: str, data: str) -> float:
    """Wall seconds of what a part's process does besides arithmetic: start Python, import
    torch and weightlab, load the plugins, initialize the device, load the dataset."""
    rc, _, secs = s.run([sys.executable, "-c", PROBE, device, data], "start-up probe")
    if rc != 0:
        raise RuntimeError(f"the start-up probe exited {rc}")
    return secs


def cifar10_data(s: Session) -> str:
    """$WEIGHTLAB_DATA if set, else CIFAR-10 written once in the standard layout (into
    $WEIGHTLAB_TEST_CACHE/cifar10, where the benchmarks look too) from the JPEG copy carried in
    .gpu/data or found in $WEIGHTLAB_TEST_DATA (../shared/data/README.md)."""
    if os.environ.get("WEIGHTLAB_DATA"):
        return os.environ["WEIGHTLAB_DATA"]
    from benchmarks.common import REPO, shared_data

    root = shared_data() or REPO / ".gpu" / "data"
    src = root / "cifar10" / "materialize.py"
    if not src.is_file():
        raise RuntimeError(f"CIFAR-10: {src} is absent; run `bash benchmarks/gpu_session.sh "
                           f"stage` and carry .gpu")
    dest = Path(os.environ.get("WEIGHTLAB_TEST_CACHE", "/tmp/weightlab-cache")) / "cifar10"
    if not (dest / "cifar-10-batches-py" / "test_batch").is_file():
        rc, _, _ = s.run([sys.executable, str(src), str(dest)], "materialize CIFAR-10")
        if rc != 0:
            raise RuntimeError(f"{src} exited {rc}")
    os.environ["WEIGHTLAB_DATA"] = str(dest)
    os.environ.setdefault("WEIGHTLAB_TEST_DATA", str(root))
    return str(dest)


def pack_checkpoints(out: Path, work: Path, records: dict[str, dict]) -> dict:
    """Every checkpoint that fits, in priority order (b, d, then c: what later CPU work can use
    first), into one tar split in ≤ 16 MiB pieces under $OUT (at most CKPT_SLOTS pieces)."""
    room = CKPT_SLOTS * OUT_FILE_LIMIT - TAR_SLACK
    chosen, left_out, used = [], [], 0
    for part in ("b", "d", "c"):
        for p in records.get(part, {}).get("checkpoints") or []:
            if not p or not Path(p).is_file():
                continue
            n = Path(p).stat().st_size + 1024  # its header and its padding to 512 bytes
            if used + n <= room:
                chosen.append((part, Path(p)))
                used += n
            else:
                left_out.append(f"{p} ({n / MIB:.1f} MiB: no room)")
    for old in out.glob("checkpoints.tar.*"):
        old.unlink()
    if not chosen:
        return {"files": [], "left_out": left_out}
    tar_path = work / "checkpoints.tar"
    with tarfile.open(tar_path, "w") as tar:
        for part, p in chosen:
            tar.add(p, arcname=f"{part}/{p.parent.name}/{p.name}")
    pieces = []
    with open(tar_path, "rb") as f:
        while chunk := f.read(OUT_FILE_LIMIT):
            piece = out / f"checkpoints.tar.{len(pieces)}"
            piece.write_bytes(chunk)
            pieces.append(piece.name)
    return {"files": [f"{part}/{p.parent.name}/{p.name}" for part, p in chosen],
            "pieces": pieces, "left_out": left_out,
            "unpack": "cat checkpoints.tar.* > checkpoints.tar && tar xf checkpoints.tar"}


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_session",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(gpu_plan.SIZES), default="full",
                   help="full: the GPU run; tiny: the CPU rehearsal (same parts and calls)")
    p.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    p.add_argument("--out", default=os.environ.get("OUT", "runs/gpu"),
                   help="results folder (the device tool's $OUT)")
    p.add_argument("--work", default=None, help="checkpoints and scratch, outside $OUT "
                   "(default: a fresh folder in $TMPDIR or /tmp)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds from now for everything")
    p.add_argument("--deadline", type=float, default=None,
                   help="absolute end time (seconds since the epoch); overrides --budget")
    p.add_argument("--parts", default=",".join(PARTS), help="comma list, in priority order")
    p.add_argument("--plan", action="store_true", help="print the plan and stop")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="plan against this bf16 peak instead of the device's (e.g. 989 to "
                        "plan an H200 run on a CPU)")
    p.add_argument("--epochs", type=int, default=None,
                   help="train every training part this many epochs instead of fitting them "
                        "to the time left (a rerun of one part)")
    # internal: run one part in this process (the orchestrator starts these)
    p.add_argument("--run-part", default=None, help=argparse.SUPPRESS)
    p.add_argument("--overhead", type=float, default=0.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    start = time.time()
    parts = [p for p in a.parts.split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        print(f"gpu_session: --parts {a.parts!r}: unknown {', '.join(bad)}; expected a comma "
              f"list of {', '.join(PARTS)}", file=sys.stderr)
        return 2
    import torch

    from benchmarks.common import environment, peak_flops

    deadline = a.deadline or start + a.budget
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    size = gpu_plan.size_named(a.size)
    out = Path(a.out)
    work = Path(a.work) if a.work else \
        Path(os.environ.get("TMPDIR", "/tmp")) / f"weightlab-gpu-session-{os.getpid()}"
    s = Session(out, work, deadline, device, own_groups=not a.run_part)
    dev = torch.device(device)
    peak, peak_source = peak_flops(dev)
    if a.peak_tflops:
        peak, peak_source = a.peak_tflops * 1e12, "given with --peak-tflops"
    planner = gpu_plan.Planner(size, peak, a.overhead)
    for t in (size.b, size.c, size.c_pfm, size.d):
        t.epochs = t.target_epochs
    if a.run_part:
        from benchmarks.gpu_parts import run_part

        if a.epochs and a.run_part != "a":
            planner.part_steps(a.run_part)[0].epochs = a.epochs
        return run_part(a.run_part, s, size, planner)

    env = {**environment(dev), "peak_flops": peak, "peak_source": peak_source,
           "size": a.size, "budget_s": round(deadline - start, 1)}
    problem = None
    try:
        data = "-"
        if size.data != "cifar10":
            data = size.data
        elif not a.plan:
            env["data_dir"], data = cifar10_data(s), "cifar10"
        planner.overhead = probe(s, device, data)
    except (RuntimeError, OutOfTime) as e:
        problem = str(e)
    env["seconds_per_call"] = round(planner.overhead, 2)
    plan = planner.table([q for p in parts for q in ([p, "c_pfm"] if p == "c" else [p])])
    print(f"GPU session plan ({a.size} size on {env.get('gpu', device)}, peak "
          f"{peak / 1e12:.3g} TFLOP/s, {peak_source}; start-up {planner.overhead:.1f} s per "
          f"process, measured{' without data loading' if data == '-' else ''}); "
          f"budget {deadline - start:.0f} s; epochs at their targets, fitted to the time left "
          f"after (a):", flush=True)
    for e in plan:
        print(gpu_plan.describe(e), flush=True)
    print(f"  total at the targets ~{sum(e.seconds for e in plan):.0f} s", flush=True)
    if a.plan:
        return 0
    records: dict[str, dict] = {}
    for part in parts:
        rec = {"part": part, "title": TITLES[part], "size": a.size, "device": device,
               "env": env, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        records[part] = rec
        if problem:
            rec.update(status="failed", reason=problem)
            s.write(part, rec)
            continue
        est = _fit(part, parts, planner, size, s, a.epochs)
        if est is None:
            t = planner.part_steps(part)[0]
            need = planner.estimate(part, t.min_epochs).seconds
            rec.update(status="skipped", reason=f"not reached: {s.left():.0f} s left, {t.model} "
                       f"needs ~{need:.0f} s for its minimum of {t.min_epochs} epochs")
            s.say(f"({part}) skipped: {rec['reason']}")
            s.write(part, rec)
            continue
        rec["plan"] = gpu_plan.as_dict(est)
        s.say(f"({part}) {TITLES[part]}: ~{est.seconds:.0f} s planned"
              + (f", {est.epochs} epochs" if est.epochs else ""))
        s.write(part, rec)
        t0 = time.time()
        cmd = [sys.executable, "-m", "benchmarks.gpu_session", "--run-part", part,
               "--size", a.size, "--device", device, "--out", str(out), "--work", str(work),
               "--deadline", str(deadline), "--overhead", str(planner.overhead)]
        if est.epochs:
            cmd += ["--epochs", str(est.epochs)]
        try:
            rc, _, _ = s.run(cmd, f"part {part}", capture=False)
            rec = json.loads((out / f"{part}.json").read_text())
            if rec["status"] == "running":  # the process died without a word
                rec.update(status="failed", reason=f"the part's process exited {rc}")
        except OutOfTime as e:
            rec = json.loads((out / f"{part}.json").read_text())
            rec.update(status="timeout", reason=str(e))
        records[part] = rec
        rec["elapsed_s"] = round(time.time() - t0, 1)
        if part in ("b", "c", "d"):
            rec["returned_checkpoints"] = pack_checkpoints(out, work, records)
        s.write(part, rec)
        s.say(f"({part}) {rec['status']} in {rec['elapsed_s']} s"
              + (f": {rec['reason']}" if rec.get("reason") else ""))
        if rec["status"] == "timeout":
            break
    summary(records, time.time() - start)
    return 1 if problem else 0


def _fit(part, parts, planner, size, s, epochs=None):
    """Part (a) as planned; a training part with ``epochs`` if given (a rerun), else the
    epochs that fit (tiny: its one epoch)."""
    if part == "a":
        return planner.estimate("a")
    if epochs or not size.fit_epochs:
        t = planner.part_steps(part)[0]
        t.epochs = epochs or t.target_epochs
        return planner.estimate(part, t.epochs)
    nxt = {"b": "c", "c": "d"}.get(part)
    return planner.allot(part, s.left(), nxt if nxt in parts else None)


def summary(records: dict[str, dict], total: float) -> None:
    """A few lines per part: what the reply's output tail shows."""
    print(f"\n== GPU session summary ({total:.0f} s) ==", flush=True)
    for part, r in records.items():
        line = f"({part}) {r['status']:<8} {r.get('elapsed_s', 0):>6} s"
        tr = r.get("training")
        if tr:
            accs = ", ".join(f"{100 * m['test_top1']:.2f}%" for m in tr["models"])
            line += f"  {tr['model']} {tr['epochs']} ep [{' '.join(tr['flags'])}]: {accs}"
            if "target_top1" in r:
                line += f" (target {100 * r['target_top1']:.1f}%: " + \
                    ("reached)" if r.get("reached_target") else "not reached)")
        for m in r.get("merges") or []:
            if "midpoint" in m:
                line += f" | {m['matcher']}+{m['normalizer']} {100 * m['midpoint']:.2f}%"
        for p in r.get("pruning") or []:
            if p.get("pruned"):
                norm = (p.get("normalized") or {}).get("top1")
                line += f" | pruned {100 * p['pruned']['top1']:.2f}%" + \
                    (f" → reset {100 * norm:.2f}%" if norm is not None else "")
        pfm = r.get("pfm") or {}
        if pfm.get("rows"):
            line += " | pfm k:top1 " + " ".join(f"{x['k']}:{100 * x['top1']:.1f}"
                                                 for x in pfm["rows"])
        elif pfm.get("reason"):
            line += f" | pfm {pfm['reason']}"
        for t in (r.get("result") or {}).get("throughput", []):
            line += f" | {t['model']} b{t['batch']} ×{t['speedup']:.2f} MFU {100 * t['mfu']:.1f}%"
        for p in (r.get("result") or {}).get("pair", []):
            line += f" | pair {p['model']} " + ", ".join(
                f"{e} {p[e]['efficiency']:.2f}" for e in ("batched", "sequential") if e in p)
        if r.get("reason"):
            line += f"  ({r['reason']})"
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
