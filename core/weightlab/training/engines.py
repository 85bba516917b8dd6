"""Two ways to take one SGD step for K models, each on its own batch.

- :class:`SequentialEngine`: one model after the other (any model; DDP-wrapped under torchrun).
- :class:`BatchedEngine`: the K models' parameters and buffers stacked along a leading axis
  (``torch.func.stack_module_state``) and one ``vmap(functional_call)`` forward for all of
  them: convolutions become one grouped convolution, linears one batched matmul, so K small
  models keep a GPU as busy as one K-times wider model. BatchNorm's running statistics are
  stacked buffers that vmap updates in place, model by model. Σ_k loss_k has, for each model's
  parameters, exactly that model's gradient, and SGD (momentum, weight decay, Nesterov) acts
  element-wise, so the stacked update equals K separate updates up to floating-point rounding.

Both keep ``models``: ordinary modules that always hold the current weights (in the batched
engine their parameters and buffers are views into the stacked tensors), used for evaluation,
LMC and checkpoints. Training metrics accumulate on the device in ``sums`` (K × [Σ loss,
correct, count]); nothing in a step synchronizes with the host.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from weightlab.training.config import SpeedOptions, TrainConfig
from weightlab.training.distributed import DistInfo, average_gradients


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """``cfg.optimizer``: SGD (momentum, Nesterov, L2 weight decay), Adam (L2 weight decay
    added to the gradient, as torch.optim.Adam) or AdamW (decoupled weight decay), with
    ``betas`` and ``eps``. The fused kernel on CUDA (one launch for all parameters), foreach
    elsewhere. Every update is elementwise, so the batched engine's stacked parameters (one
    row per model) get exactly each model's own update."""
    if cfg.optimizer == "sgd":
        cls = torch.optim.SGD
        kw = dict(lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                  weight_decay=cfg.weight_decay)
    else:
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        kw = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                  weight_decay=cfg.weight_decay)
    if device.type == "cuda":
        try:
            return cls(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):  # older torch or unsupported dtype
            pass
    return cls(params, foreach=True, **kw)


def _resolve(choice: str, device: torch.device) -> bool:
    return choice == "on" or (choice == "auto" and device.type == "cuda")


class Engine:
    models: list[nn.Module]

    def __init__(self, cfg: TrainConfig, speed: SpeedOptions, device: torch.device,
                 dist: DistInfo, masks: dict[str, torch.Tensor], k: int):
        self.cfg, self.speed, self.device, self.dist = cfg, speed, device, dist
        self.masks = {n: m.to(device) for n, m in masks.items()}
        self.sums = torch.zeros(k, 3, device=device, dtype=torch.float64)
        self.amp = _resolve(speed.amp, device)
        self.channels_last = speed.channels_last == "on" or (
            speed.channels_last == "auto" and device.type in ("cuda", "cpu"))

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def compiled(self, fn):
        if not (self.speed.compile or self.speed.cuda_graphs):
            return fn
        # CUDA graphs through torch.compile's cudagraph trees: forward and backward replay as
        # graphs, the (fused) optimizer step stays outside. CPU has no graphs: plain compile.
        mode = "reduce-overhead" if self.speed.cuda_graphs and self.device.type == "cuda" \
            else None
        return torch.compile(fn, mode=mode)

    def losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy in fp32 (logits may be bf16 under autocast)."""
        return F.cross_entropy(logits.float(), y, reduction="none",
                               label_smoothing=self.cfg.label_smoothing)

    def record(self, k, losses: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            self.sums[k, 0] += losses.detach().sum(-1).double()
            self.sums[k, 1] += (logits.argmax(-1) == y).sum(-1).double()
            self.sums[k, 2] += y.shape[-1]

    def set_lr(self, opt: torch.optim.Optimizer, lr: float) -> None:
        for g in opt.param_groups:
            g["lr"] = lr

    # canonical optimizer state (per model: parameter name → {state key: tensor}, e.g.
    # momentum_buffer for SGD, exp_avg/exp_avg_sq/step for Adam), so a resume state written by
    # one engine loads into the other
    def momentum_state(self) -> list[dict[str, dict[str, torch.Tensor]]]:
        raise NotImplementedError

    def load_momentum_state(self, state: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError


def _load_state(opt: torch.optim.Optimizer, entries: dict[int, dict[str, torch.Tensor]]
                ) -> None:
    """Per-parameter state (by position in the optimizer's one parameter group) through
    ``load_state_dict``, which places each tensor where this optimizer keeps it (the step
    count on the CPU unless fused/capturable)."""
    sd = opt.state_dict()
    sd["state"] = entries
    opt.load_state_dict(sd)


def _canonical(entry: Any) -> dict[str, torch.Tensor]:
    """One parameter's optimizer state; a bare tensor is an older resume file's SGD buffer."""
    return entry if isinstance(entry, dict) else {"momentum_buffer": entry}


class SequentialEngine(Engine):
    name = "sequential"

    def __init__(self, nets: list[nn.Module], cfg, speed, device, dist, masks):
        super().__init__(cfg, speed, device, dist, masks, len(nets))
        if dist.enabled and device.type == "cuda":
            # BatchNorm statistics over the global batch, as in single-process training
            nets = [nn.SyncBatchNorm.convert_sync_batchnorm(n) for n in nets]
        if self.channels_last:
            nets = [n.to(memory_format=torch.channels_last) for n in nets]
        self.models = nets
        self.train_nets = nets
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.train_nets = [DDP(n, device_ids=ids, broadcast_buffers=False) for n in nets]
        self.forwards = [self.compiled(n) for n in self.train_nets]
        self.opts = [make_optimizer(n.parameters(), cfg, device) for n in nets]
        self.named = [dict(n.named_parameters()) for n in nets]

    def step(self, batches, lr: float, scale: float) -> None:
        for k, (x, y) in enumerate(batches):
            opt = self.opts[k]
            self.set_lr(opt, lr)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                logits = self.forwards[k](x)
            losses = self.losses(logits, y)
            opt.zero_grad(set_to_none=True)
            (losses.sum() * scale).backward()
            opt.step()
            if self.masks:
                with torch.no_grad():
                    for name, m in self.masks.items():
                        self.named[k][name].mul_(m)
            self.record(k, losses, logits, y)

    def momentum_state(self):
        return [{n: dict(opt.state[p]) for n, p in named.items() if opt.state.get(p)}
                for named, opt in zip(self.named, self.opts)]

    def load_momentum_state(self, state):
        for named, opt, st in zip(self.named, self.opts, state):
            _load_state(opt, {i: _canonical(st[n]) for i, n in enumerate(named) if n in st})


class BatchedEngine(Engine):
    name = "batched"

    def __init__(self, nets: list[nn.Module], cfg, speed, device, dist, masks):
        from torch.func import functional_call, stack_module_state, vmap

        super().__init__(cfg, speed, device, dist, masks, len(nets))
        self.models = nets
        self.params, self.buffers = stack_module_state(nets)
        _tie(nets, self.params, self.buffers)
        base = copy.deepcopy(nets[0]).to("meta").train()

        def one(p, b, x):
            return functional_call(base, (p, b), (x,))

        self.forward = self.compiled(vmap(one))
        self.opt = make_optimizer(list(self.params.values()), cfg, device)
        self.stacked_masks = {n: m[None] for n, m in self.masks.items()}

    def step(self, batches, lr: float, scale: float) -> None:
        x = torch.stack([b[0] for b in batches])                    # (K, b, C, H, W)
        y = torch.stack([b[1] for b in batches])                    # (K, b)
        self.set_lr(self.opt, lr)
        with self.autocast():
            logits = self.forward(self.params, self.buffers, x)    # (K, b, classes)
        losses = self.losses(logits.flatten(0, 1), y.flatten()).view_as(y)
        self.opt.zero_grad(set_to_none=True)
        (losses.sum() * scale).backward()
        average_gradients(list(self.params.values()), self.dist)
        self.opt.step()
        if self.stacked_masks:
            with torch.no_grad():
                for name, m in self.stacked_masks.items():
                    self.params[name].mul_(m)
        self.record(slice(None), losses, logits, y)

    def momentum_state(self):
        # stacked state tensors (one row per model) split by model; Adam's step count is one
        # scalar shared by all models (they step together)
        out = [{} for _ in self.models]
        for n, p in self.params.items():
            st = self.opt.state.get(p)
            if not st:
                continue
            for k in range(len(self.models)):
                out[k][n] = {key: v if v.dim() == 0 else v[k] for key, v in st.items()}
        return out

    def load_momentum_state(self, state):
        entries = {}
        for i, n in enumerate(self.params):
            if all(n in st for st in state):
                per = [_canonical(st[n]) for st in state]
                entries[i] = {key: per[0][key] if per[0][key].dim() == 0 else
                              torch.stack([e[key] for e in per]) for key in per[0]}
        _load_state(self.opt, entries)


def _tie(nets: list[nn.Module], params: dict, buffers: dict) -> None:
    """Make every model's parameters and buffers views of row k of the stacked tensors."""
    with torch.no_grad():
        for k, net in enumerate(nets):
            for name, p in net.named_parameters():
                p.data = params[name][k]
            for name, _ in net.named_buffers():
                mod_name, _, attr = name.rpartition(".")
                mod = net.get_submodule(mod_name) if mod_name else net
                mod._buffers[attr] = buffers[name][k]


def batched_supported(nets: list[nn.Module], input_shape, device: torch.device,
                      speed: SpeedOptions) -> str | None:
    """None when the K models train under vmap, else the reason they cannot.

    Probed on copies with a two-image batch (so the real running statistics stay untouched).
    Models that draw random numbers in training (dropout) are refused: under vmap they would
    draw differently from solo training."""
    from torch.func import functional_call, stack_module_state, vmap

    if len(nets) < 2:
        return "one model"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in nets[0].modules()):
        return "the model uses dropout"
    try:
        copies = [copy.deepcopy(n) for n in nets[:2]]
        params, buffers = stack_module_state(copies)
        base = copy.deepcopy(nets[0]).to("meta")
        x = torch.zeros(2, 2, *input_shape, device=device)
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) \
            if _resolve(speed.amp, device) else contextlib.nullcontext()
        with ctx:
            out = vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)))(params, buffers, x)
        out.float().sum().backward()
    except Exception as e:  # noqa: BLE001 - any failure means "use the sequential path"
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def create(nets: list[nn.Module], cfg: TrainConfig, speed: SpeedOptions, device: torch.device,
           dist: DistInfo, masks: dict[str, torch.Tensor], input_shape) -> Engine:
    """The batched engine when asked for (``on``), or (``auto``) on CUDA when the models
    support it; the sequential one otherwise.

    ``auto`` keeps CPUs sequential: there one vmapped step of two models took 1.37× as long as
    two solo steps (cifar_resnet20 and an MNIST MLP at batch 128, 2-core CPU), while on a GPU
    batching is what keeps small models from leaving it idle. Under DDP on CUDA, ``auto`` keeps
    BatchNorm models sequential so that SyncBatchNorm sees the global batch."""
    want = speed.batched
    if want == "off" or len(nets) < 2 or (want == "auto" and device.type != "cuda"):
        return SequentialEngine(nets, cfg, speed, device, dist, masks)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in nets[0].modules())
    if want == "auto" and dist.enabled and has_bn:
        return SequentialEngine(nets, cfg, speed, device, dist, masks)
    reason = batched_supported(nets, input_shape, device, speed)
    if reason is None:
        return BatchedEngine(nets, cfg, speed, device, dist, masks)
    if want == "on":
        print(f"batched training is not supported for this model ({reason}); training the "
              f"models one after the other", file=sys.stderr)
    return SequentialEngine(nets, cfg, speed, device, dist, masks)
