"""The GPU session's plan: what each part runs at each size, and how long it should take.

A part's time is estimated as its process's start-up + (CLI calls × ``IN_PROCESS_CALL_S``) +
(its floating-point work ÷ an effective FLOP rate). The start-up is measured on the machine
itself before the plan (``benchmarks.gpu_session.probe``: a process that imports torch and
weightlab, loads the plugins, initializes the device and loads the dataset, as a part does).
The work is counted from the models' forward FLOPs (``weightlab.flopcount.count``: 2 FLOPs per
multiply-accumulate of every conv and linear layer), × 3 for a training step (forward +
backward), over the images each step of the part touches. Before part (a) has run, the rate
is the device's bf16 peak × an assumed model FLOP utilization (``MFU_GUESS``: small CIFAR nets
reach a few per cent of an H100/H200 peak); after it, the rate measured by part (a) on the same
device replaces the guess, and the epochs of the training parts are chosen to fit the time
that is left (``allot``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

# Assumed model FLOP utilization of a training step against the bf16 peak, used only until
# part (a) has measured the real rate on the device (guesses, not measurements): ResNet-20 is
# launch-bound at batch 128 (~0.5 %: ~20k images/s per model), the wide nets ~5 %.
MFU_GUESS = {"cifar_resnet20": 0.005, "cifar_vgg16_bn": 0.05, "cifar_vgg16": 0.05,
             "cifar_resnet20_4x": 0.05}
# Seconds each CLI call costs inside a part's process besides its arithmetic (reading the
# dataset again, building the models, the JSON): assumed; the process start-up itself is the
# probe's measurement, paid once per part.
IN_PROCESS_CALL_S = 2.0
# Which measured model stands in for one that part (a) does not time (same layer widths).
RATE_PROXY = {"cifar_vgg16": "cifar_vgg16_bn", "cifar_resnet20_4x": "cifar_vgg16_bn"}


@dataclass
class PairTraining:
    """A pair (seeds s, s+1, different inits) trained with one seed recipe and a fast schedule:
    the recipe's SGD settings (lr 0.1, momentum 0.9, batch 128), cosine decay after a linear
    warm-up, weight decay ``weight_decay`` (5e-4: the short schedule's regularization)."""

    model: str
    recipe: str
    min_epochs: int
    target_epochs: int
    warmup_epochs: int = 1
    weight_decay: float = 5e-4
    eval_every: int = 5
    epochs: int = 0  # chosen by ``allot``

    def args(self) -> list[str]:
        return ["--recipe", self.recipe, self.model, "--pair", "--epochs", str(self.epochs),
                "--schedule", "cosine", "--train-param", f"weight_decay={self.weight_decay:g}",
                "--train-param", f"warmup_epochs={self.warmup_epochs}",
                "--train-param", f"eval_every={self.eval_every}"]


@dataclass
class Size:
    """Everything that differs between the GPU run (``full``) and the CPU rehearsal (``tiny``)."""

    name: str
    data: str                 # dataset name the CLI gets
    train_images: int         # per epoch
    test_images: int
    heldout: int              # training images held out (tiny: shrinks the synthetic set)
    calibration: int          # images for matchers / normalizers
    bench_args: list[str]     # benchmarks.bench_training arguments of part (a)
    bench_models: list[str]   # the full model names part (a) times
    b: PairTraining
    c: PairTraining
    c_pfm: PairTraining
    d: PairTraining
    prune_models: int = 2     # how many models of the c pair are pruned
    sparsity: float = 0.8
    fit_epochs: bool = True   # choose epochs from the time left (tiny: always its one epoch)
    pfm_ks: list[str] = field(default_factory=lambda: ["--sweep"])  # k = 0 … L−1


FULL = Size(
    "full", "cifar10", 50000, 10000, 0, 4096,
    ["--models", "resnet20,vgg16_bn", "--batch", "128,512", "--skip", "c", "--steps", "20",
     "--warmup", "5", "--rounds", "2"],
    ["cifar_resnet20", "cifar_vgg16_bn"],
    b=PairTraining("cifar_resnet20", "vf-cifar10-resnet20", 15, 50),
    c=PairTraining("cifar_vgg16_bn", "vf-cifar10-vgg16-bn", 8, 30),
    # no normalization: the seed recipe's one-epoch warm-up keeps lr 0.1 from diverging
    c_pfm=PairTraining("cifar_vgg16", "vf-cifar10-vgg16", 8, 30),
    d=PairTraining("cifar_resnet20_4x", "vf-cifar10-resnet20-4x", 10, 30),
)
# CPU rehearsal: the same parts, CLI calls and code paths on 64 synthetic 32×32 images, with
# the smallest members of the same model families (BatchNorm ResNet, BatchNorm VGG, plain VGG).
TINY = Size(
    "tiny", "synthetic", 64, 256, 448, 64,
    ["--tiny", "--models", "resnet8", "--skip", "c"], ["cifar_resnet8"],
    b=PairTraining("cifar_resnet8", "vf-cifar10-resnet20", 1, 1, eval_every=1),
    c=PairTraining("cifar_vgg11_bn", "vf-cifar10-vgg16-bn", 1, 1, eval_every=0),
    c_pfm=PairTraining("cifar_vgg11", "vf-cifar10-vgg16", 1, 1, eval_every=0),
    d=PairTraining("cifar_resnet8_2x", "vf-cifar10-resnet20-4x", 1, 1, eval_every=0),
    prune_models=1, fit_epochs=False,
    pfm_ks=["--k", "2"],  # one k: the sweep's loop, without 9 evaluations on the CPU
)
SIZES = {"full": FULL, "tiny": TINY}


@dataclass
class Estimate:
    part: str
    what: str
    calls: int
    tflop: float
    seconds: float
    epochs: int | None = None
    rate_source: str = ""
    notes: list[str] = field(default_factory=list)


def forward_flops(model: str, shape=(3, 32, 32), classes: int = 10) -> float:
    """Forward FLOPs per image (2 per multiply-accumulate of every conv and linear layer)."""
    from weightlab import plugins
    from weightlab.flopcount import count

    net = plugins.registry().create("models", model).build(list(shape), classes)
    return float(count(net, list(shape))["flops"])


class Planner:
    def __init__(self, size: Size, peak: float, overhead: float, flops=forward_flops):
        self.size, self.peak, self.overhead = size, peak, overhead
        self._flops = flops
        self._fwd: dict[str, float] = {}
        self.measured: dict[str, float] = {}  # model → training FLOP/s measured by part (a)

    def fwd(self, model: str) -> float:
        if model not in self._fwd:
            self._fwd[model] = self._flops(model)
        return self._fwd[model]

    def rate(self, model: str) -> tuple[float, str]:
        for m in (model, RATE_PROXY.get(model)):
            if m in self.measured:
                return self.measured[m], f"measured in (a) ({m} pair step)"
        if self.measured:  # another model's measured utilization (the CPU rehearsal's case)
            m, r = next(iter(self.measured.items()))
            return r, f"measured in (a) for {m}"
        guess = MFU_GUESS.get(model, 0.05)
        return self.peak * guess, f"assumed MFU {100 * guess:.1f}% of peak"

    def learn(self, bench: dict) -> None:
        """Take the batched pair step's speed from part (a)'s results as each model's rate."""
        for row in bench.get("pair", []):
            eng = row.get("batched") or row.get("sequential")
            if not eng:
                continue
            steps = bench.get("steps") or next((t["steps"] for t in bench["throughput"]
                                                if t["model"] == row["model"]), None)
            if steps is None:
                steps = 20
            images = 2 * row["batch"] * steps
            self.measured[row["model"]] = 3 * self.fwd(row["model"]) * images / \
                eng["pair_seconds"]

    def training(self, part: str, t: PairTraining, epochs: int, extra_calls: int,
                 extra_passes: float) -> Estimate:
        """A pair trained ``epochs`` epochs (evaluated every ``eval_every``), then
        ``extra_calls`` CLI calls that each run ``extra_passes`` forward passes over the
        test set's size (evaluations, calibration)."""
        s = self.size
        f = self.fwd(t.model)
        evals = (epochs // t.eval_every if t.eval_every else 0) + 1
        work = 2 * (3 * f * s.train_images * epochs + f * s.test_images * evals) \
            + extra_calls * extra_passes * f * max(s.test_images, s.calibration)
        rate, source = self.rate(t.model)
        calls = 1 + extra_calls
        return Estimate(part, f"{t.model} pair × {epochs} epochs", calls, work / 1e12,
                        self.overhead + calls * IN_PROCESS_CALL_S + work / rate, epochs,
                        source)

    def per_epoch(self, t: PairTraining) -> float:
        f = self.fwd(t.model)
        rate, _ = self.rate(t.model)
        return 2 * 3 * f * self.size.train_images / rate

    def bench(self) -> Estimate:
        """Part (a): per model and batch, the one-step checks, warm-up and 2 rounds of the
        trainer and the plain loop, then the pair steps (batched and sequential)."""
        steps, warm, rounds = 20, 5, 2
        work, calls = 0.0, 1
        batches = [128, 512] if self.size.name == "full" else [16]
        secs = calls * self.overhead
        for m in self.size.bench_models:
            f = self.fwd(m)
            rate, _ = self.rate(m)
            imgs = sum(b * (2 * (warm + rounds * steps) + 4) for b in batches) \
                + batches[0] * 2 * 2 * (warm + rounds * steps + 2)
            work += 3 * f * imgs
            # the plain loop's DataLoader start (8 workers) and its PIL pipeline: a few s per
            # measurement on a server CPU
            secs += 3 * f * imgs / rate + 5 * len(batches)
        return Estimate("a", "speed and pair efficiency: " +
                        ", ".join(self.size.bench_models), calls, work / 1e12, secs, None,
                        self.rate(self.size.bench_models[0])[1])

    def part_steps(self, part: str) -> tuple[PairTraining, int, float]:
        """(training, extra CLI calls, forward passes of each) of parts b, c, c_pfm, d."""
        s = self.size
        return {"b": (s.b, 4, 3 + 2),         # 4 merges: evaluate A, B, midpoint; calibrate
                "c": (s.c, s.prune_models, 3 + 1),  # dense, pruned, reset; calibrate
                "c_pfm": (s.c_pfm, 1, 2 * 14),      # stats pass, then k = 0 … 13 evaluated
                "d": (s.d, 1, 3 + 2)}[part]

    def estimate(self, part: str, epochs: int | None = None) -> Estimate:
        if part == "a":
            return self.bench()
        t, calls, passes = self.part_steps(part)
        return self.training(part, t, epochs or t.epochs or t.target_epochs, calls, passes)

    def allot(self, part: str, seconds_left: float, then: str | None = None
              ) -> Estimate | None:
        """The most epochs (up to the target) that fit in ``seconds_left`` while leaving the
        next part ``then`` its minimum (when it cannot be left that, this part takes what it
        can); None when even this part's minimum does not fit."""
        t, _, _ = self.part_steps(part)
        fixed = self.estimate(part, 1).seconds - self.per_epoch(t)

        def fit(seconds: float) -> int:
            return min(t.target_epochs, int((seconds - fixed) / max(self.per_epoch(t), 1e-9)))

        epochs = fit(seconds_left)
        if then is not None:
            nxt = self.part_steps(then)[0]
            leave = self.estimate(then, nxt.min_epochs).seconds
            if fit(seconds_left - leave) >= t.min_epochs:
                epochs = fit(seconds_left - leave)
        if epochs < t.min_epochs:
            return None
        t.epochs = epochs
        return self.estimate(part, epochs)

    def table(self, parts: list[str]) -> list[Estimate]:
        return [self.estimate(p) for p in parts]


def describe(e: Estimate) -> str:
    return (f"  {'(' + e.part + ')':<8}{e.what:<52} {e.calls:>2} calls {e.tflop:9.1f} TFLOP "
            f"~{e.seconds:5.0f} s  [{e.rate_source}]")


def as_dict(e: Estimate) -> dict:
    return asdict(e)


def size_named(name: str) -> Size:
    base = SIZES[name]
    # fresh copies: allot() writes the chosen epochs into them
    return replace(base, b=replace(base.b), c=replace(base.c), c_pfm=replace(base.c_pfm),
                   d=replace(base.d))
