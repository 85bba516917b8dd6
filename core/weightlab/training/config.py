"""The training recipe as a parameter dataclass (validated like any component's)."""

from __future__ import annotations

from dataclasses import dataclass

from weightlab.params import param

SCHEDULES = ("multistep", "cosine", "linear", "onecycle", "constant")


@dataclass
class TrainConfig:
    epochs: int = param(10, "training epochs", min=1)
    batch_size: int = param(128, "images per step", min=1)
    lr: float = param(0.1, "peak learning rate", min=0.0)
    optimizer: str = param("sgd", "sgd, adam or adamw (decoupled weight decay)",
                           choices=("sgd", "adam", "adamw"))
    momentum: float = param(0.9, "SGD momentum", min=0.0, max=1.0)
    nesterov: bool = param(False, "Nesterov momentum")
    weight_decay: float = param(1e-4, "weight decay (L2 for sgd/adam, decoupled for adamw)",
                                min=0.0)
    beta1: float = param(0.9, "adam/adamw: first-moment decay", min=0.0, max=1.0)
    beta2: float = param(0.999, "adam/adamw: second-moment decay", min=0.0, max=1.0)
    eps: float = param(1e-8, "adam/adamw: denominator epsilon", min=0.0, min_exclusive=True)
    schedule: str = param("multistep", "learning-rate schedule (by iteration)", choices=SCHEDULES)
    milestones: list[int] = param([], "multistep: iterations at which lr is multiplied by gamma "
                                      "(default: 50% and 75% of training)")
    gamma: float = param(0.1, "multistep: lr factor at each milestone", min=0.0)
    warmup_iters: int = param(0, "linear warm-up iterations from 0", min=0)
    warmup_epochs: int = param(0, "linear warm-up epochs (added to warmup_iters; the seed "
                                  "recipes' optional one-epoch warm-up)", min=0)
    warmup_start: float = param(-1.0, "warm-up factor at iteration 0: ≥ 0 ramps linearly from "
                                      "it to 1 over the warm-up as torch's LinearLR (the seed "
                                      "code: 1e-5); -1: (it+1)/W, reaching the peak on the last "
                                      "warm-up step")
    min_lr: float = param(0.0, "cosine/linear: final learning rate", min=0.0)
    augment: bool = param(True, "the dataset's training augmentation (CIFAR: crop + flip); "
                                "false = the seed code's --no-random-aug")
    label_smoothing: float = param(0.0, "cross-entropy label smoothing", min=0.0, max=1.0)
    seed: int = param(0, "seed of the first model (model k uses seed + k)")
    save_epochs: list[int] = param([], "also keep checkpoints after these epochs")
    eval_every: int = param(1, "evaluate on the test split every N epochs (0: only at the end)",
                            min=0)


SEED_RECIPE = {"epochs": 160, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
               "weight_decay": 1e-4, "schedule": "multistep", "milestones": [32000, 48000],
               "gamma": 0.1}


@dataclass
class SpeedOptions:
    """How to run a recipe fast; none of these changes what is computed (up to rounding).

    ``auto`` resolves by device: bf16 autocast and the batched K-model path (when the model
    runs under ``torch.func.vmap``) on CUDA only; channels_last on CUDA and on CPUs (oneDNN's
    convolutions: a cifar_resnet20 step at batch 128 took 0.28 s instead of 0.40 s on the
    2-core development machine, cifar_vgg16_bn 1.67 s instead of 1.81 s)."""

    amp: str = param("auto", "bf16 autocast (CUDA only)", choices=("auto", "on", "off"))
    channels_last: str = param("auto", "channels_last memory format (auto: CUDA and CPU)",
                               choices=("auto", "on", "off"))
    compile: bool = param(False, "torch.compile the training forward")
    cuda_graphs: bool = param(False, "capture forward+backward in CUDA graphs "
                                     "(torch.compile mode reduce-overhead; CUDA only)")
    batched: str = param("auto", "train K models in one vmapped step (auto: on CUDA)",
                         choices=("auto", "on", "off"))
