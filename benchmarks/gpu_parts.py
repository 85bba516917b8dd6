"""The GPU session's parts (a)–(d). Each part runs in a process of its own, started by
``benchmarks.gpu_session`` with the time left as its limit, so a timeout or a crash loses only
that part; the part writes ``$OUT/<part>.json`` after every step.

Inside a part, every step is a ``weightlab`` CLI command (``weightlab_cli.main.main`` with the
same arguments a user types, ``--json`` on stdout), run in the part's process to save a Python
and torch start-up per step. After a step fails, the rest of the part runs each command as a
process of its own instead (a CUDA error can leave the process's device context unusable).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks import gpu_plan

TITLES = {"a": "training throughput and pair efficiency (B1, B3)",
          "b": "cifar_resnet20 pair: midpoint naive / weight matching / + reset_bn / + REPAIR",
          "c": "cifar_vgg16_bn pair: global magnitude 80% ± reset_bn; cifar_vgg16 PFM (CCA)",
          "d": "cifar_resnet20_4x pair: weight matching + REPAIR midpoint"}
TARGET_TOP1 = {"b": 0.915}  # issue 18: a fast schedule is fine if it reaches this
RESERVE_S = 10.0  # kept back at the deadline for the last JSON and the checkpoint packing
# Training attempts in order: the batched (vmapped) engine the issue asks for, then the
# sequential engine, then plain fp32 (no autocast, no channels_last).
ATTEMPTS = (["--batched"], ["--no-batched"],
            ["--no-batched", "--amp", "off", "--channels-last", "off"])


class OutOfTime(Exception):
    pass


class Session:
    """Where a part writes, how long it may take, and how it runs commands."""

    def __init__(self, out: Path, work: Path, deadline: float, device: str,
                 own_groups: bool = True):
        self.out, self.work, self.deadline, self.device = out, work, deadline, device
        # the orchestrator starts each part as a process group of its own; inside a part,
        # commands stay in the part's group, so stopping the part stops them too
        self.own_groups = own_groups
        self.in_process = True
        self.calls: list[dict] = []
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.time() - RESERVE_S

    def say(self, msg: str) -> None:
        print(f"[session {time.strftime('%H:%M:%S')}, {self.left():5.0f} s left] {msg}",
              flush=True)

    def run(self, args: list[str], label: str, capture: bool = True
            ) -> tuple[int, str, float]:
        """One command (stderr to the log as it comes, stdout kept unless not ``capture``),
        killed with all its children at the deadline (OutOfTime)."""
        limit = self.left()
        if limit <= 1:
            raise OutOfTime(f"{label}: no time left to start it")
        self.say("$ " + " ".join("<script>" if "\n" in x else x for x in args))
        stdout_path = self.work / f"call-{os.getpid()}-{len(self.calls):02d}.out"
        t0 = time.time()
        with open(stdout_path, "w") as so:
            proc = subprocess.Popen(args, stdout=so if capture else None, stderr=None,
                                    start_new_session=self.own_groups)
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                if self.own_groups:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
                proc.wait()
                self.calls.append({"label": label, "seconds": time.time() - t0, "rc": None})
                raise OutOfTime(f"{label}: stopped at the session deadline after "
                                f"{time.time() - t0:.0f} s") from None
        secs = time.time() - t0
        self.calls.append({"label": label, "seconds": secs, "rc": rc})
        return rc, stdout_path.read_text(), secs

    def cli(self, args: list[str], label: str) -> tuple[dict | list | None, dict]:
        """``weightlab ARGS --json``: (its parsed output or None, a record of the call)."""
        args = [*args, "--json"]
        if self.in_process:
            rc, text, secs = self._in_process(args, label)
            if rc != 0:
                self.in_process = False
        else:
            rc, text, secs = self.run(weightlab_cmd() + args, label)
        rec = {"label": label, "rc": rc, "seconds": round(secs, 2),
               "command": "weightlab " + " ".join(args)}
        if rc != 0:
            self.say(f"{label}: exit {rc}")
            return None, rec
        try:
            return json.loads(text), rec
        except ValueError:
            rec["error"] = f"no JSON on stdout: {text[-300:]!r}"
            return None, rec

    def _in_process(self, args: list[str], label: str) -> tuple[int, str, float]:
        from weightlab_cli.main import main

        if self.left() <= 1:
            raise OutOfTime(f"{label}: no time left to start it")
        self.say("$ weightlab " + " ".join(args))
        buf = io.StringIO()
        t0 = time.time()
        try:
            with contextlib.redirect_stdout(buf):
                rc = main(list(args))
        except Exception:  # noqa: BLE001 - WEIGHTLAB_DEBUG=1 lets the traceback through
            traceback.print_exc()
            rc = 1
        secs = time.time() - t0
        self.calls.append({"label": label, "seconds": secs, "rc": rc})
        return rc, buf.getvalue(), secs

    def write(self, part: str, record: dict) -> None:
        path = self.out / f"{part}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
        os.replace(tmp, path)


def weightlab_cmd() -> list[str]:
    """The CLI beside the interpreter running this (a venv's or the device image's bin/)."""
    exe = Path(sys.executable).parent / "weightlab"
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from weightlab_cli.main import main; "
                                  "sys.exit(main())"]


# ---- steps -----------------------------------------------------------------------------------

def train_pair(s: Session, t: gpu_plan.PairTraining, size: gpu_plan.Size, name: str,
               rec: dict, attempts=ATTEMPTS) -> list[str]:
    """Train the pair, falling back through ``attempts``; the two checkpoint paths."""
    run_dir = s.work / name
    base = [*t.args(), "--data", size.data, "--device", s.device, "--out", str(run_dir),
            "--force"]
    if size.heldout:
        base += ["--heldout", str(size.heldout)]
    tries = rec.setdefault("train_attempts", [])
    for extra in attempts:
        out, call = s.cli(["train", *base, *extra], f"train {t.model}")
        call["flags"] = extra
        tries.append(call)
        if out is not None:
            rec["training"] = {"model": t.model, "recipe": t.recipe, "epochs": t.epochs,
                               "schedule": "cosine", "weight_decay": t.weight_decay,
                               "warmup_epochs": t.warmup_epochs, "flags": extra,
                               "data": size.data, "models": out,
                               "command": "weightlab train " + " ".join(base + extra)}
            return [r["model"] for r in out]
    raise RuntimeError(f"training {t.model} failed with every engine: {list(attempts)}")


def merge(s: Session, ckpts: list[str], matcher: str, normalizer: str | None,
          size: gpu_plan.Size, out: Path) -> dict:
    args = ["merge", *ckpts, "--matcher", matcher, "-o", str(out), "--calibration-samples",
            str(size.calibration), "--device", s.device, "--force"]
    if normalizer:
        args += ["--normalizer", normalizer]
    res, call = s.cli(args, f"merge {matcher} + {normalizer or 'none'}")
    row = {"matcher": matcher, "normalizer": normalizer or "none", **call}
    if res is not None:
        ev = res["evaluation"]
        row.update(model_a=ev[0]["top1"], model_b=ev[1]["top1"], midpoint=ev[-1]["top1"],
                   midpoint_loss=ev[-1]["loss"], checkpoint=str(out))
    return row


# ---- the parts -------------------------------------------------------------------------------

def part_a(s: Session, size: gpu_plan.Size, planner: gpu_plan.Planner, rec: dict) -> None:
    from benchmarks import bench_training

    args = ["--device", s.device, *size.bench_args]
    s.say("$ python -m benchmarks.bench_training " + " ".join(args))
    t0 = time.time()
    bench = bench_training.main(args)
    rec["calls"] = [{"label": "bench_training", "seconds": round(time.time() - t0, 2),
                     "command": "python -m benchmarks.bench_training " + " ".join(args)}]
    rec["result"] = bench
    planner.learn(bench)
    rec["measured_train_tflops"] = {m: r / 1e12 for m, r in planner.measured.items()}


def part_b(s, size, planner, rec) -> None:
    ckpts = train_pair(s, size.b, size, "b_resnet20", rec)
    rec["target_top1"] = TARGET_TOP1["b"]
    rec["reached_target"] = all(m["test_top1"] >= TARGET_TOP1["b"]
                                for m in rec["training"]["models"])
    rec["checkpoints"] = list(ckpts)
    s.write("b", rec)
    rec["merges"] = []
    for matcher, norm in (("identity", None), ("weight", None), ("weight", "reset_bn"),
                          ("weight", "repair")):
        out = s.work / "b_resnet20" / f"mid-{matcher}-{norm or 'none'}.safetensors"
        rec["merges"].append(merge(s, ckpts, matcher, norm, size, out))
        s.write("b", rec)
    rec["checkpoints"].append(rec["merges"][-1].get("checkpoint"))


def part_c(s, size, planner, rec) -> None:
    ckpts = train_pair(s, size.c, size, "c_vgg16_bn", rec)
    rec["checkpoints"] = ckpts
    s.write("c", rec)
    rec["pruning"] = []
    for k, ck in enumerate(ckpts[:size.prune_models]):
        out = s.work / "c_vgg16_bn" / f"pruned-{k + 1}.safetensors"
        res, call = s.cli(["prune", ck, "--pruner", "global_magnitude", "--sparsity",
                           str(size.sparsity), "--normalizer", "reset_bn",
                           "--calibration-samples", str(size.calibration), "-o", str(out),
                           "--device", s.device, "--force"], f"prune model {k + 1}")
        if res is not None:
            call.update({key: res.get(key) for key in ("sparsity", "dense", "pruned",
                                                       "normalized")})
            call["pruner_seconds"] = res.get("seconds")
        rec["pruning"].append(call)
        s.write("c", rec)
    # preserve-first merging on the plain VGG16, only if its minimum fits the time left
    pfm: dict = {"status": "skipped"}
    rec["pfm"] = pfm
    est = planner.allot("c_pfm", s.left()) if size.fit_epochs else \
        planner.estimate("c_pfm", size.c_pfm.target_epochs)
    if est is None:
        need = planner.estimate("c_pfm", size.c_pfm.min_epochs).seconds
        pfm["reason"] = f"not reached: {s.left():.0f} s left, the cifar_vgg16 pair needs " \
                        f"~{need:.0f} s for its minimum of {size.c_pfm.min_epochs} epochs"
        return
    size.c_pfm.epochs = est.epochs
    pfm.update(status="running", plan=gpu_plan.as_dict(est))
    s.write("c", rec)
    pair = train_pair(s, size.c_pfm, size, "c_vgg16", pfm)
    s.write("c", rec)
    res, call = s.cli(["pfm", *pair, "--matcher", "cca", *size.pfm_ks,
                       "--calibration-samples", str(size.calibration), "--device", s.device],
                      "pfm cca " + " ".join(size.pfm_ks))
    pfm["call"] = call
    if res is None:
        pfm["status"] = "failed"
        return
    pfm["rows"] = [{k: r.get(k) for k in ("k", "preserved", "loss", "top1", "params_ratio",
                                          "flops_ratio")} for r in res["rows"]]
    pfm["references"] = res.get("references")
    pfm["status"] = "done"


def part_d(s, size, planner, rec) -> None:
    ckpts = train_pair(s, size.d, size, "d_resnet20_4x", rec)
    rec["checkpoints"] = list(ckpts)
    s.write("d", rec)
    out = s.work / "d_resnet20_4x" / "mid-weight-repair.safetensors"
    rec["merges"] = [merge(s, ckpts, "weight", "repair", size, out)]


RUNNERS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d}


def run_part(part: str, s: Session, size: gpu_plan.Size, planner: gpu_plan.Planner) -> int:
    """The body of a part's process: its record (as the orchestrator started it) is in
    ``$OUT/<part>.json``; the status becomes done or failed here, timeout there."""
    path = s.out / f"{part}.json"
    rec = json.loads(path.read_text())
    a_json = s.out / "a.json"
    if part != "a" and a_json.is_file():
        result = json.loads(a_json.read_text()).get("result")
        if result:
            planner.learn(result)
    try:
        RUNNERS[part](s, size, planner, rec)
        rec["status"] = "done"
    except OutOfTime as e:
        rec.update(status="timeout", reason=str(e))
    except (Exception, SystemExit) as e:  # noqa: BLE001 - recorded; the next part still runs
        traceback.print_exc()
        rec.update(status="failed", reason=f"{type(e).__name__}: {e}")
    rec["calls_in_process"] = s.in_process
    s.write(part, rec)
    return 0
