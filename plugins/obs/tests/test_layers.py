"""im2col: the Hessian from a layer's unfolded inputs measures exactly the error of the layer's
own forward pass, for convs with groups, stride, dilation, reflect padding, and Conv1d."""

import pytest
import torch
from torch import nn
from weightlab_obs.layers import from_matrices, hessian, weight_matrices
from weightlab_obs.solver import reconstruction_error


@pytest.mark.filterwarnings("ignore:Using padding=.same.")
@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2d(4, 6, 3, stride=2, dilation=2, padding=1, groups=2, bias=False,
                       padding_mode="reflect"), (5, 4, 11, 9)),
    (lambda: nn.Conv2d(3, 8, (3, 2), padding="same", bias=False), (5, 3, 7, 7)),
    (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=2, groups=2, bias=False), (5, 4, 13)),
    (lambda: nn.Linear(12, 5, bias=False), (5, 3, 12)),
])
def test_hessian_measures_the_layer_output_error(make, shape):
    """For a random Ŵ: Σ_g tr(ΔW_g H_g ΔW_gᵀ) / Σ_g tr(W_g H_g W_gᵀ) equals
    ‖f(x; W) − f(x; Ŵ)‖² / ‖f(x; W)‖² from the module itself (float64: measured relative
    differences ≤ 4e-16; asserted 1e-9)."""
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(*shape, dtype=torch.float64)
    h, rows, images = hessian(layer, layer, [(x, None)], samples=100, dtype=torch.float64)
    assert images == 5
    w = layer.weight.detach().clone()
    w_hat = w * (torch.rand(w.shape) > 0.5)
    with torch.no_grad():
        y = layer(x)
        layer.weight.copy_(w_hat)
        y_hat = layer(x)
    expected = float((y - y_hat).square().sum() / y.square().sum())
    mats, mats_hat = weight_matrices(layer, w), weight_matrices(layer, w_hat)
    num = sum(reconstruction_error(mats[g], mats_hat[g], h[g])
              * float(torch.einsum("ri,ij,rj->", mats[g], h[g], mats[g]))
              for g in range(h.shape[0]))
    den = sum(float(torch.einsum("ri,ij,rj->", mats[g], h[g], mats[g])) for g in range(h.shape[0]))
    assert num / den == pytest.approx(expected, rel=1e-9)
    channels = y.shape[-1] if isinstance(layer, nn.Linear) else y.shape[1]
    assert rows == y.numel() // channels  # one input row per output position
    assert torch.equal(from_matrices(layer, mats, w.shape), w)
