"""Training speed: weightlab's trainer against a plain loop written the seed code's way.

    python -m benchmarks.bench_training [--quick] [--device cuda] [--models resnet20,vgg16_bn,
        resnet20_4x,mlp] [--batch 128,512] [--compile] [--threads N] [--out FILE]

The plain loop: a torch Dataset over the image arrays handing PIL images to torchvision
transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize; MNIST:
ToTensor, Normalize), a DataLoader with worker processes, fp32, ``.item()`` every step.
weightlab: uint8 data on the device, crop/flip there, bf16 autocast + channels_last + fused SGD
on CUDA, metrics kept on the device.

(a) throughput, images/s, trainer ÷ plain loop, per model and batch size;
(b) pair efficiency: time for 2 models in one batched step ÷ (2 × time for one model);
(c) time to a target test accuracy (cifar_resnet20, cifar_vgg16_bn on the CIFAR-10 copy).
Each ratio is measured side by side in one run after a correctness check (one step from the
same weights on the same batch must give the same weights). Model FLOP utilization (MFU =
images/s × training FLOPs per image ÷ device peak) stands next to each throughput.
``--quick`` is CPU-sized (well under a minute); ``--tiny`` runs every path on a few images.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.common import environment, flops_per_image, peak_flops, shared_data, sync, timed

ALIASES = {"resnet20": ("cifar_resnet20", "cifar10"), "resnet20_4x": ("cifar_resnet20_4x",
                                                                      "cifar10"),
           "vgg16_bn": ("cifar_vgg16_bn", "cifar10"), "mlp": ("mlp", "mnist"),
           "resnet8": ("cifar_resnet8", "cifar10")}
TIME_TO_ACC = ("resnet20", "vgg16_bn", "resnet8")


# ---- data -----------------------------------------------------------------------------------

def load_bundle(data: str, device: torch.device, train_n: int | None, test_n: int | None,
                real: bool = True):
    """The real dataset when ../shared/data has it (and ``real``), else a synthetic stand-in
    of the same shape (noted in the results)."""
    from weightlab import testing
    from weightlab.data.bundle import load_data

    root = shared_data() if real else None
    if data == "cifar10" and root and (root / "cifar10" / "cifar10_jpeg_bytes.npz").is_file():
        b = load_data("cifar10", data_dir=testing.cifar10_dir(), device=str(device))
        source = "CIFAR-10 (JPEG q75 copy)"
    elif data == "mnist" and root and (root / "MNIST" / "raw").is_dir():
        b = load_data("mnist", data_dir=root, device=str(device))
        source = "MNIST"
    else:
        shape = {"cifar10": (3, 32), "mnist": (1, 28)}[data]
        b = load_data("synthetic", device=str(device), params={
            "n_train": train_n or 50000, "n_test": test_n or 10000, "channels": shape[0],
            "size": shape[1]})
        b.dataset.augment = "crop_flip" if data == "cifar10" else None
        source = f"synthetic stand-in for {data}"
    if train_n:
        b = dataclasses.replace(b, train_idx=b.train_idx[:train_n])
    if test_n:
        b = dataclasses.replace(b, test=(b.test[0][:test_n], b.test[1][:test_n]))
    return b, source


class SeedStyleDataset(torch.utils.data.Dataset):
    """The seed code's input pipeline: one PIL image per item through torchvision transforms."""

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, transform):
        self.hwc = images_u8.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        img = self.hwc[i]
        img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(img), self.labels[i]


def seed_loader(bundle, batch: int, augment: bool, shuffle: bool, workers: int, device):
    import torchvision.transforms as T

    d = bundle.dataset
    tf = [T.ToTensor(), T.Normalize(d.mean, d.std)]
    if augment and d.augment == "crop_flip":
        tf = [T.RandomCrop(d.input_shape[-1], padding=4), T.RandomHorizontalFlip()] + tf
    x, y = bundle.train[0][bundle.train_idx], bundle.train[1][bundle.train_idx]
    ds = SeedStyleDataset(x, y, T.Compose(tf))
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=shuffle,
                                       num_workers=workers, pin_memory=device.type == "cuda",
                                       persistent_workers=workers > 0, drop_last=False)


def forever(loader, set_epoch=False):
    epoch = 0
    while True:
        if set_epoch:
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


# ---- the two sides --------------------------------------------------------------------------

def build(model: str, bundle, seed: int, device):
    """The model initialised from ``seed`` (what ``weightlab train`` builds for that seed)."""
    from weightlab import plugins

    torch.manual_seed(seed)
    comp = plugins.registry().create("models", model)
    return comp.build(bundle.input_shape, bundle.num_classes).to(device)


def _cfg(epochs: int, **kw):
    from weightlab.params import build_params
    from weightlab.training.config import TrainConfig

    return build_params(TrainConfig, {"epochs": epochs, "lr": 0.1, "momentum": 0.9,
                                      "weight_decay": 5e-4, **kw})


def plain_step(net, opt, x, y, device, stats):
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    out = net(x)
    loss = F.cross_entropy(out, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    stats[0] += loss.item()  # the seed code's habit: a host sync every step
    stats[1] += (out.argmax(1) == y).sum().item()


def plain_opt(net, cfg):
    return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def check_one_step(model, bundle, device, batch) -> dict:
    """Correctness first: (1) the two input pipelines give the same normalized batch (no
    augmentation; they differ by float rounding), (2) one fp32 step from the same weights on
    that batch gives the same weights (a trainer step is the plain step)."""
    from weightlab.training import engines
    from weightlab.training.config import SpeedOptions
    from weightlab.training.distributed import DistInfo

    cfg = _cfg(1)
    net = build(model, bundle, 0, device)
    ref = copy.deepcopy(net)
    fp32 = SpeedOptions(amp="off", channels_last="off")
    eng = engines.SequentialEngine([net], cfg, fp32, device, DistInfo(device=str(device)), {})
    x, y = next(iter(bundle.loader("train", batch_size=batch)))
    px, py = next(iter(seed_loader(bundle, batch, False, False, 0, device)))
    px, py = px.to(device), py.to(device)
    input_diff = (x - px).abs().max().item() if torch.equal(y, py) else float("inf")
    eng.step([(px, py)], cfg.lr, 1.0 / len(py))
    plain_step(ref, plain_opt(ref, cfg), px, py, device, [0.0, 0.0])
    diff = max((a - b).abs().max().item() for a, b in zip(net.state_dict().values(),
                                                          ref.state_dict().values()))
    return {"max_abs_input_diff": input_diff, "max_abs_weight_diff": diff,
            "ok": input_diff < 1e-5 and diff < 1e-5}


def best_of(rounds: int, fn_a, fn_b, device) -> tuple[float, float]:
    """Alternate a and b ``rounds`` times; the fastest time of each (other load only slows a
    run down, so the minimum is the least disturbed measurement)."""
    times_a, times_b = [], []
    for _ in range(rounds):
        times_a.append(timed(fn_a, device))
        times_b.append(timed(fn_b, device))
    return min(times_a), min(times_b)


def throughput(model, bundle, device, batch, steps, warmup, rounds, workers, speed, peak
               ) -> dict:
    from weightlab.training import engines
    from weightlab.training.distributed import DistInfo

    check = check_one_step(model, bundle, device, batch)
    if not check["ok"]:
        raise SystemExit(f"{model}: trainer and plain loop disagree (inputs by "
                         f"{check['max_abs_input_diff']:.3g}, weights after one step by "
                         f"{check['max_abs_weight_diff']:.3g}); not timing")
    cfg = _cfg(1)
    net = build(model, bundle, 0, device)
    fpi = flops_per_image(net, bundle.input_shape)
    eng = engines.create([net], cfg, speed, device, DistInfo(device=str(device)), {},
                         bundle.input_shape)
    batches = forever(bundle.loader("train", batch_size=batch, shuffle=True, augment=True),
                      set_epoch=True)

    def wl(n):
        for _ in range(n):
            x, y = next(batches)
            eng.step([(x, y)], cfg.lr, 1.0 / len(y))

    ref = build(model, bundle, 0, device)
    opt = plain_opt(ref, cfg)
    plain_batches = forever(seed_loader(bundle, batch, True, True, workers, device))
    stats = [0.0, 0.0]

    def plain(n):
        for _ in range(n):
            x, y = next(plain_batches)
            plain_step(ref, opt, x, y, device, stats)

    timed(lambda: wl(warmup), device)
    timed(lambda: plain(warmup), device)
    t_wl, t_plain = best_of(rounds, lambda: wl(steps), lambda: plain(steps), device)
    ips_wl, ips_plain = steps * batch / t_wl, steps * batch / t_plain
    return {"model": model, "batch": batch, "steps": steps, "rounds": rounds, "engine": eng.name,
            "images_per_s": ips_wl, "plain_images_per_s": ips_plain,
            "speedup": ips_wl / ips_plain, "train_gflop_per_image": fpi / 1e9,
            "mfu": ips_wl * fpi / peak, "plain_mfu": ips_plain * fpi / peak, "check": check}


def pair_efficiency(model, bundle, device, batch, steps, warmup, rounds, speed) -> dict:
    """Time for one step of 2 models ÷ (2 × time for one model), for the batched (vmap) and the
    sequential engine, each checked first against two solo steps."""
    from weightlab.training import engines
    from weightlab.training.distributed import DistInfo

    cfg = _cfg(1)
    dist = DistInfo(device=str(device))
    gen = torch.Generator().manual_seed(0)
    x = bundle.loader("train", batch_size=batch).normalize(
        bundle.train[0][bundle.train_idx[:batch]].to(device))
    y = bundle.train[1][bundle.train_idx[:batch]].to(device)
    perm = torch.randperm(len(y), generator=gen).to(device)
    batches = [(x, y), (x[perm], y[perm])]

    def solo_steps(solo_speed):
        """Each model's first step alone: what a pair step must reproduce."""
        solo = [engines.SequentialEngine([build(model, bundle, s, device)], cfg, solo_speed,
                                         device, dist, {}) for s in (0, 1)]
        for k, eng in enumerate(solo):
            eng.step([batches[k]], cfg.lr, 1.0 / batch)
        return solo

    out = {"model": model, "batch": batch,
           "auto_engine": engines.create([build(model, bundle, s, device) for s in (0, 1)],
                                         cfg, speed, device, dist, {}, bundle.input_shape).name}

    def run(eng, bs, n):
        for _ in range(n):
            eng.step(bs, cfg.lr, 1.0 / batch)

    one = engines.SequentialEngine([build(model, bundle, 0, device)], cfg, speed, device, dist,
                                   {})
    for mode in ("on", "off"):
        pair = engines.create([build(model, bundle, s, device) for s in (0, 1)], cfg,
                              dataclasses.replace(speed, batched=mode), device, dist, {},
                              bundle.input_shape)
        pair.step(batches, cfg.lr, 1.0 / batch)  # correctness first: = two solo steps
        # in the pair's memory format (the vmapped path runs contiguous; channels_last
        # convolutions round differently)
        solo = solo_steps(speed if pair.name == "sequential"
                          else dataclasses.replace(speed, channels_last="off"))
        diff = max((a - b).abs().max().item() for k in range(2)
                   for a, b in zip(pair.models[k].state_dict().values(),
                                   solo[k].models[0].state_dict().values()))
        if diff > (5e-2 if pair.amp else 1e-4):
            raise SystemExit(f"{model}: {pair.name} pair differs from solo steps by {diff:.3g}")
        run(pair, batches, warmup)
        run(one, batches[:1], warmup)
        t_pair, t_one = best_of(rounds, lambda p=pair: run(p, batches, steps),
                                lambda: run(one, batches[:1], steps), device)
        out[pair.name] = {"pair_seconds": t_pair, "one_seconds": t_one,
                          "efficiency": t_pair / (2 * t_one),
                          "check": {"max_abs_weight_diff": diff, "ok": True}}
    return out


def time_to_accuracy(model, bundle, device, batch, target, max_epochs, workers, speed) -> dict:
    """Train from the same init with the same per-iteration lr until test top-1 ≥ target;
    evaluation time is excluded on both sides."""
    from weightlab.metrics import evaluate
    from weightlab.training import engines
    from weightlab.training.distributed import DistInfo
    from weightlab.training.schedules import lr_factor

    cfg = _cfg(max_epochs, schedule="onecycle")
    test = bundle.loader("test", batch_size=1000)
    out = {"model": model, "batch": batch, "target": target, "max_epochs": max_epochs}
    for side in ("weightlab", "plain"):
        net = build(model, bundle, 0, device)
        if side == "weightlab":
            eng = engines.create([net], cfg, speed, device, DistInfo(device=str(device)), {},
                                 bundle.input_shape)
            loader = bundle.loader("train", batch_size=batch, shuffle=True, augment=True)
        else:
            opt = plain_opt(net, cfg)
            loader = seed_loader(bundle, batch, True, True, workers, device)
        total = max_epochs * len(loader)
        it, spent, acc, epochs = 0, 0.0, 0.0, 0
        for epoch in range(max_epochs):
            if side == "weightlab":
                loader.set_epoch(epoch)
            sync(device)
            t0 = time.perf_counter()
            stats = [0.0, 0.0]
            for x, y in loader:
                lr = cfg.lr * lr_factor(cfg, it, total)
                if side == "weightlab":
                    eng.step([(x, y)], lr, 1.0 / len(y))
                else:
                    for g in opt.param_groups:
                        g["lr"] = lr
                    plain_step(net, opt, x, y, device, stats)
                it += 1
            sync(device)
            spent += time.perf_counter() - t0
            epochs = epoch + 1
            acc = evaluate(net, test)["top1"]
            if acc >= target:
                break
        out[side] = {"seconds": spent, "epochs": epochs, "test_top1": acc,
                     "reached": acc >= target}
    if out["weightlab"]["reached"] and out["plain"]["reached"]:
        out["speedup"] = out["plain"]["seconds"] / out["weightlab"]["seconds"]
    return out


# ---- driver ---------------------------------------------------------------------------------

def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_training",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU-sized: well under a minute")
    p.add_argument("--tiny", action="store_true", help="every path on a few images (tests)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default=None, help="comma list (resnet20, resnet20_4x, "
                                                  "vgg16_bn, mlp)")
    p.add_argument("--batch", default=None, help="comma list of batch sizes")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=None,
                   help="alternating timing rounds per measurement (the best counts)")
    p.add_argument("--target", type=float, default=None, help="test top-1 for (c)")
    p.add_argument("--max-epochs", type=int, default=None, help="epoch limit for (c)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers of the plain loop")
    p.add_argument("--compile", action="store_true", help="torch.compile weightlab's step")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--skip", default="", help="comma list of parts to skip: a,b,c")
    p.add_argument("--out", default=None, help="write the results as JSON")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from weightlab.training.config import SpeedOptions

    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    size = "tiny" if a.tiny else "quick" if a.quick else "full"
    models = (a.models or {"tiny": "resnet8,mlp", "quick": "resnet20,mlp",
                           "full": "resnet20,vgg16_bn,resnet20_4x,mlp"}[size]).split(",")
    batches = [int(b) for b in (a.batch or {"tiny": "16", "quick": "32",
                                            "full": "128,512"}[size]).split(",")]
    steps = a.steps or {"tiny": 1, "quick": 2, "full": 30}[size]
    warmup = a.warmup if a.warmup is not None else {"tiny": 1, "quick": 1, "full": 5}[size]
    rounds = a.rounds or {"tiny": 1, "quick": 2, "full": 3}[size]
    train_n = {"tiny": 64, "quick": 256, "full": None}[size]
    test_n = {"tiny": 64, "quick": 500, "full": None}[size]
    target = a.target if a.target is not None else {"tiny": 0.0, "quick": 0.12,
                                                    "full": 0.85}[size]
    max_epochs = a.max_epochs or {"tiny": 1, "quick": 1, "full": 40}[size]
    workers = 0 if a.tiny else a.workers
    speed = SpeedOptions(compile=a.compile)
    skip = set(a.skip.split(","))
    peak, peak_source = peak_flops(device)
    res = {"benchmark": "training", "size": size, **environment(device),
           "peak_flops": peak, "peak_source": peak_source, "data": {},
           "throughput": [], "pair": [], "time_to_accuracy": []}
    bundles = {}
    for name in models:
        arch, data = ALIASES.get(name, (name, "cifar10"))
        if data not in bundles:
            bundles[data], res["data"][data] = load_bundle(data, device, train_n, test_n,
                                                           real=not a.tiny)
        b = bundles[data]
        for batch in batches:
            if "a" not in skip:
                res["throughput"].append(throughput(arch, b, device, batch, steps, warmup,
                                                    rounds, workers, speed, peak))
                _say(res["throughput"][-1], "a")
            if "b" not in skip and batch == batches[0]:
                res["pair"].append(pair_efficiency(arch, b, device, batch, steps, warmup,
                                                   rounds, speed))
                _say(res["pair"][-1], "b")
        if "c" not in skip and name in TIME_TO_ACC:
            res["time_to_accuracy"].append(time_to_accuracy(arch, b, device, batches[0],
                                                            target, max_epochs, workers,
                                                            speed))
            _say(res["time_to_accuracy"][-1], "c")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return res


def _say(r: dict, part: str) -> None:
    if part == "a":
        line = (f"(a) {r['model']:<18} batch {r['batch']:>4}: {r['images_per_s']:9.1f} img/s "
                f"(MFU {100 * r['mfu']:.2f}%) vs plain {r['plain_images_per_s']:9.1f} img/s "
                f"(MFU {100 * r['plain_mfu']:.2f}%): ×{r['speedup']:.2f}")
    elif part == "b":
        line = f"(b) {r['model']:<18} batch {r['batch']:>4}: pair ÷ 2 × one = " + ", ".join(
            f"{r[e]['efficiency']:.2f} {e}" for e in ("batched", "sequential") if e in r) + \
            f" (auto: {r['auto_engine']})"
    else:
        w, p = r["weightlab"], r["plain"]
        line = (f"(c) {r['model']:<18} to {100 * r['target']:.0f}%: weightlab {w['seconds']:.1f}s "
                f"({w['epochs']} ep, {100 * w['test_top1']:.1f}%) vs plain {p['seconds']:.1f}s "
                f"({p['epochs']} ep, {100 * p['test_top1']:.1f}%)"
                + (f": ×{r['speedup']:.2f}" if "speedup" in r else ""))
    print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
