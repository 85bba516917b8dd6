"""ZipIt! and CCA on attention: head spaces merged head by head (weightlab.matching.heads).

A model merged with a copy of itself whose channels (heads, channels within heads, every other
free space) were permuted at random must come back as the same function: the copy's features
equal the original's up to the permutation, so the joint merge pairs each feature with its
copy and averages equal weights."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from weightlab import plugins, testing
from weightlab.alignment import head_matrix, permute_model, random_permutation
from weightlab.graph import trace
from weightlab_zipit.joint import merged_model, model_parts


def _swin(seed: int) -> nn.Module:
    """A two-stage Swin: per-head relative position bias tables (``Entry.per_group``)."""
    torch.manual_seed(seed)
    net = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1],
                                             num_heads=[2, 4], window_size=[4, 4],
                                             num_classes=10).eval()
    for m in net.modules():  # the tables start at zero: give each head its own bias
        if hasattr(m, "relative_position_bias_table"):
            nn.init.normal_(m.relative_position_bias_table, std=0.5)
    return net


def _merge_with_planted_copy(net: nn.Module, size: int, matcher: str, seed: int):
    x = torch.randn(256, 3, size, size, generator=torch.Generator().manual_seed(seed))
    g = trace(net, x[:1])
    copy = permute_model(net, g, random_permutation(g, torch.Generator().manual_seed(seed)))
    data = [(x[i:i + 64], torch.zeros(64, dtype=torch.long)) for i in range(0, 256, 64)]
    m = plugins.registry().create("matchers", matcher)
    al = m.match(g, net, copy, data)
    merged = merged_model([net, copy], g, al)
    with torch.no_grad():
        ref, out = net(x[:64]), merged(x[:64])
    return g, al, float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_zipit_merging_a_planted_copy_gives_the_model_back(arch):
    """torchvision ViT (2 blocks, 4 heads of 8; 28×28) and a two-stage Swin (2 and 4 heads,
    per-head relative position bias tables; 32×32) merged by ZipIt! with a copy carrying a
    random permutation of every free space, heads included: the merged logits equal the
    model's (measured relative max |Δ|: 0.0 for both; bound 1e-5),
    and every part's head-level map is a head permutation."""
    net, size = (testing.torchvision_vit(0), 28) if arch == "vit" else (_swin(0), 32)
    g, al, rel = _merge_with_planted_copy(net, size, "zipit", seed=3)
    assert rel < 1e-5
    heads = [s for s in g.free_spaces() if s.groups > 1]
    assert heads, "the model has free head spaces"
    for part in model_parts(al, g):
        for s in heads:
            h = head_matrix(part.merges[s.id][0], s.groups)
            assert torch.allclose(h.sort(1).values[:, -1], torch.ones(s.groups))
            assert torch.allclose(h.sum(0), torch.ones(s.groups))


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_cca_maps_a_planted_copy_head_by_head(arch):
    """CCA against the same planted copies: in every head space B's map T (the merge is
    [½I ½T]) is the planted permutation to 1e-5 (measured 1.2e-7 ViT, 2.3e-8 Swin). The
    whole model does not come back: the residual stream's features are LayerNorm outputs,
    centred across channels, so their covariance is singular and regularized CCA spreads each
    channel (T's rows reach 31/32 on the ViT's 32-channel stream: measured relative logit
    error 0.63 ViT, 0.50 Swin)."""
    net, size = (testing.torchvision_vit(0), 28) if arch == "vit" else (_swin(0), 32)
    g, al, _ = _merge_with_planted_copy(net, size, "cca", seed=3)
    planted = random_permutation(g, torch.Generator().manual_seed(3))
    for s in (s for s in g.free_spaces() if s.groups > 1):
        t = 2 * al.merges[s.id][0][:, s.size:]
        p = torch.zeros(s.size, s.size)
        p[planted.perms[s.id], torch.arange(s.size)] = 1.0  # copy channel i is A's perm[i]
        assert torch.allclose(t, p, atol=1e-5), f"space {s.id}"


def test_a_merge_that_mixes_heads_is_refused():
    """A merge matrix that averages channels of two different heads into one is not a head of
    the attention: applying it is one clear error."""
    from weightlab.alignment import Alignment
    from weightlab.errors import WeightlabError

    net = testing.torchvision_vit(0)
    g = trace(net, torch.randn(1, 3, 28, 28))
    s = next(s for s in g.free_spaces() if s.groups > 1)
    m = torch.eye(s.size)
    m[0, 0], m[0, s.size - 1] = 0.5, 0.5  # channel 0 of head 0 with the last of head 3
    al = Alignment(merges={s.id: (m, torch.linalg.pinv(m))})
    with pytest.raises(WeightlabError, match="mixes channels of different attention heads"):
        al.apply(g, net.state_dict())


def test_value_output_spaces_are_zipped_within_heads_and_query_key_permuted():
    """On real statistics of two differently seeded ViTs (random 28×28 inputs): every
    value·output merge matrix draws each merged head from one head of each model (ZipIt! with
    b = 0.5, within-model zips allowed); query·key merges are the joint form of a permutation
    (entries ½ and 0 only, one ½ per model per row)."""
    from weightlab.matching.heads import linear_read

    a, b = testing.torchvision_vit(0), testing.torchvision_vit(1)
    x = torch.randn(256, 3, 28, 28, generator=torch.Generator().manual_seed(5))
    g = trace(a, x[:1])
    data = [(x[i:i + 64], torch.zeros(64, dtype=torch.long)) for i in range(0, 256, 64)]
    m = plugins.registry().create("matchers", "zipit", {"b": 0.5})
    al = m.match(g, a, b, data)
    for s in (s for s in g.free_spaces() if s.groups > 1):
        merge = al.merges[s.id][0]
        c = s.size
        for k in (0, 1):
            head_matrix(merge[:, k * c:(k + 1) * c], s.groups)  # no head mixing
        if not linear_read(g, s):
            assert set(merge.unique().tolist()) <= {0.0, 0.5}
            assert torch.equal((merge[:, :c] > 0).sum(1), torch.ones(c, dtype=torch.long))
            assert torch.equal((merge[:, c:] > 0).sum(1), torch.ones(c, dtype=torch.long))


@pytest.mark.parametrize("name, size, kw", [
    ("eva02_tiny_patch14_224", 56, {"depth": 2}), ("levit_128s", 64, {})],
    ids=["eva-rope", "levit-head-first"])
def test_zipit_merges_rigid_head_spaces(name, size, kw):
    """ZipIt! where heads may move only whole (EVA-02's RoPE query·key space; LeViT's
    head-first q/k/v blocks): the rigid spaces' features are read at q, k and v, each head's
    channels observations of its unit, and a planted copy merges back to the model (measured
    relative max |Δ| 0.0 for both; bound 1e-5)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=10, img_size=(size, size),
                            **kw).eval()
    g, _, rel = _merge_with_planted_copy(net, size, "zipit", seed=3)
    assert any(s.groups > 1 and s.groups == s.size for s in g.free_spaces())  # rigid ones
    assert rel < 1e-5
