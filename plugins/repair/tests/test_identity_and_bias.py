"""Exact properties that need no training: a model repaired towards itself is unchanged, and
bias calibration follows its formula b_h ← α^(h−1)·b_h (exact on a linear MLP)."""

import pytest
import torch
from torch import nn
from weightlab import testing
from weightlab_repair.bias_calibration import BiasCalibration
from weightlab_repair.places import find_places
from weightlab_repair.repair import Repair, Rescale, Reshift


@pytest.fixture(scope="module")
def digits():
    return testing.tiny_data("digits")


@pytest.mark.parametrize("name", ["mlp", "cifar_resnet8", "cifar_resnet8_ln",
                                  "plain_cifar_resnet8", "vit_d2_w16_p2_h2"])
@pytest.mark.parametrize("cls", [Repair, Rescale, Reshift])
def test_repair_towards_itself_is_identity(digits, name, cls):
    """One reference equal to the target (weight 1): outputs unchanged in float64 (measured:
    max |Δ logits| = 0 for mlp, cifar_resnet8 (BN), _ln and plain_ (conv biases); the ViT's
    attention outputs and MLP linears are corrected: 0 as well). The whole
    calibration set is one batch, so the train-mode pass of the temporary normalizations sees
    exactly the full-data statistics."""
    net = testing.tiny_model(name, input_shape=(1, 8, 8), seed=1).double().eval()
    testing.randomize_norms(net, 2)
    calib = digits.loader("calibration", batch_size=512, num_samples=512)
    x = next(iter(digits.loader("test", batch_size=256)))[0].double()
    out = cls().apply(net, [net], [1.0], calib)
    assert out is not net
    with torch.no_grad():
        before, after = net(x), out(x)
    scale = before.abs().max()
    assert (after - before).abs().max() <= 1e-10 * scale


def test_repair_towards_itself_with_batches_is_close(digits):
    """With several calibration batches the one-pass correction uses per-batch statistics
    upstream (as the REPAIR notebook does), so the identity holds only approximately
    (measured: max |Δ logits| / max |logits| = 6.1e-3 for 8 batches of 64)."""
    net = testing.tiny_model("mlp", input_shape=(1, 8, 8), seed=1).double().eval()
    calib = digits.loader("calibration", batch_size=64, num_samples=512)
    x = next(iter(digits.loader("test", batch_size=256)))[0].double()
    out = Repair().apply(net, [net], [1.0], calib)
    with torch.no_grad():
        before, after = net(x), out(x)
    assert (after - before).abs().max() <= 2e-2 * before.abs().max()


def _layer_outputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    handles = [m.register_forward_hook(lambda mod, i, o: outs.append(o))
               for m in net.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return outs


@pytest.mark.parametrize("with_data", [False, True])
def test_bias_calibration_is_exact_on_a_vanished_linear_mlp(digits, with_data):
    """Linear MLP (activation=none, 3 hidden layers + logits). A copy whose layers h ≥ 2 shrink
    inputs by α (W'_h = α·W_h) and whose biases are kept — the vanishing feature — becomes,
    after b_h ← α^(h−1)·b_h, exactly f'_h(x) = α^(h−1)·f_h(x) at every layer (float64)."""
    alpha = 0.5
    net = testing.tiny_model("mlp", input_shape=(1, 8, 8), seed=3, activation="none",
                             width=32).double().eval()
    with torch.no_grad():
        for lin in [m for m in net.modules() if isinstance(m, nn.Linear)]:
            lin.bias.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(4))
    vanished = testing.tiny_model("mlp", input_shape=(1, 8, 8), seed=3, activation="none",
                                  width=32).double().eval()
    vanished.load_state_dict(net.state_dict())
    with torch.no_grad():
        for lin in [m for m in vanished.modules() if isinstance(m, nn.Linear)][1:]:
            lin.weight.mul_(alpha)
    data = digits.loader("calibration", batch_size=64, num_samples=64) if with_data else None
    fixed = BiasCalibration(alpha=alpha).apply(vanished, [], [], data)
    x = next(iter(digits.loader("test", batch_size=128)))[0].double()
    ref, got, broken = _layer_outputs(net, x), _layer_outputs(fixed, x), \
        _layer_outputs(vanished, x)
    assert len(ref) == 4
    for h, (f, g) in enumerate(zip(ref, got), start=1):
        torch.testing.assert_close(g, alpha ** (h - 1) * f, rtol=1e-12, atol=1e-12)
    # and the uncorrected copy is far from it (the test can fail)
    assert (broken[-1] - alpha ** 3 * ref[-1]).abs().max() > 0.1 * ref[-1].abs().max() * alpha ** 3


def test_bias_calibration_folds_through_batchnorm():
    """With a BatchNorm after a conv the effective bias β + γ(b − μ)/√(σ² + ε) — the BN output
    for a zero conv input — is what gets scaled: after calibration it is α^(h−1) times itself."""
    alpha = 0.7
    net = testing.tiny_model("cifar_resnet8", input_shape=(1, 8, 8), seed=5).double().eval()
    testing.randomize_norms(net, 6)
    fixed = BiasCalibration(alpha=alpha).apply(net, [], [], None)
    x0 = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    before = {p.name: p for p in find_places(net, x0)}
    after = find_places(fixed, x0)
    assert [p.norm_name is not None for p in after].count(True) == len(after) - 1
    for p in after:
        q = before[p.name]
        zero_in = torch.zeros((1, q.layer.weight.shape[1], 4, 4) if p.norm is not None
                              else (1, q.layer.weight.shape[1]), dtype=torch.float64)
        with torch.no_grad():
            b0 = q.point(q.layer(zero_in)) if q.norm is not None else q.layer(zero_in)
            b1 = p.point(p.layer(zero_in)) if p.norm is not None else p.layer(zero_in)
            torch.testing.assert_close(b1, alpha ** (p.depth - 1) * b0, rtol=1e-12, atol=1e-12)
            # the input-induced part is untouched
            w_in = torch.randn(zero_in.shape, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(p.depth))
            y0 = q.point(q.layer(w_in)) - b0 if q.norm is not None else q.layer(w_in) - b0
            y1 = p.point(p.layer(w_in)) - b1 if p.norm is not None else p.layer(w_in) - b1
            torch.testing.assert_close(y1, y0, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("weights", "alpha"), [([0.5, 0.5], 0.5), ([0.3, 0.7], 0.58),
                                                ([1.0, 0.0], 1.0), ([0.25] * 4, 0.25)])
def test_bias_calibration_takes_alpha_from_the_merge_weights(weights, alpha):
    """α = Σ_k w_k² of the merge weights it is given (before: ½ whatever the weights): a linear
    MLP's h-th layer bias becomes α^(h−1)·b_h (0.3/0.7 → α = 0.09 + 0.49 = 0.58; at the endpoint
    (1, 0) nothing changes). The references are other models, so no layer counts as copied."""
    net = testing.tiny_model("mlp", input_shape=(1, 8, 8), seed=1, activation="none").double()
    others = [testing.tiny_model("mlp", input_shape=(1, 8, 8), seed=10 + k, activation="none")
              .double() for k in range(len(weights))]
    fixed = BiasCalibration().apply(net, others, weights, None)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    fixed_linears = [m for m in fixed.modules() if isinstance(m, nn.Linear)]
    for h, (a, b) in enumerate(zip(linears, fixed_linears, strict=True), start=1):
        torch.testing.assert_close(b.bias, alpha ** (h - 1) * a.bias, rtol=1e-12, atol=1e-12)


def test_attention_output_projections_are_places():
    """nn.MultiheadAttention computes its output projection inside its forward (the module
    out_proj is never called): REPAIR measures and corrects it at the attention's output.
    A 2-block ViT has 2 attention outputs + 2 × 2 MLP linears + the patch embedding + head."""
    net = testing.tiny_model("vit_d2_w16_p2_h2", input_shape=(1, 8, 8), seed=1).eval()
    names = [p.name for p in find_places(net, torch.randn(2, 1, 8, 8))]
    attn = [n for n in names if n.endswith("out_proj")]
    assert len(attn) == 2 and len(names) == 8, names
