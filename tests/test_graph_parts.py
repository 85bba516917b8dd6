"""Channels made of parts (graph.split) and layers on constant inputs, on small hand-written
modules: a residual stream cut into chunks that are chained by additions and concatenated
back (Res2Net / EdgeNeXt's SplitTransposeBlock), channel ranges sliced by indexing (GhostNet,
DPN, ReXNet), and a conv over a constant grid of positions added to features (EdgeNeXt's
Fourier position encoding). Each is traced, checked invariant
under a random permutation of every free space, and checked to *break* under a plausible
wrong grouping, so that the grouping the trace finds is the one the function needs."""

from __future__ import annotations

import copy

import torch
from torch import nn
from weightlab.graph import Space, trace
from weightlab.graph.check import permutation_check


class _ChainedChunks(nn.Module):
    """A stream of 10 channels cut into chunks of 4, 4, 2: chunk 0 through a depthwise conv,
    chunk 1 added to that result and through another, chunk 2 passed on; the three
    concatenated, mixed by a 1×1 conv and added back to the stream."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 1)
        self.convs = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1, groups=4) for _ in range(2)])
        self.mix = nn.Conv2d(10, 10, 1)
        self.head = nn.Linear(10, 5)

    def forward(self, x):
        x = self.stem(x)
        parts = x.chunk(3, dim=1)
        sp = self.convs[0](parts[0])
        outs = [sp]
        sp = self.convs[1](sp + parts[1])
        outs += [sp, parts[2]]
        x = x + self.mix(torch.relu(torch.cat(outs, dim=1)))
        return self.head(x.mean((2, 3)))


class _GridPosition(nn.Module):
    """Features plus a 1×1 conv of a constant sin/cos grid of the pixel positions."""

    def __init__(self):
        super().__init__()
        self.stem, self.proj = nn.Conv2d(3, 6, 1), nn.Conv2d(4, 6, 1)
        self.fc, self.head = nn.Conv2d(6, 6, 1), nn.Linear(6, 5)

    def forward(self, x):
        b, _, h, w = x.shape
        ys = torch.linspace(0, 3, h, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(0, 3, w, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        grid = torch.cat([ys.sin(), ys.cos(), xs.sin(), xs.cos()], dim=1)
        y = torch.relu(self.stem(x) + self.proj(grid))
        return self.head(torch.relu(self.fc(y)).mean((2, 3)))


class _Slices(nn.Module):
    """Channel ranges cut by indexing, as GhostNet, DPN and ReXNet do: a ghost module
    (``cat(primary, cheap(primary))[:, :6]`` of 8 channels: the depthwise ``cheap`` keeps
    ``primary``'s channels, its last 2 are dropped), a dual path (``dual``'s first 4 channels
    added to the stream, the other 3 concatenated to it) and a partial residual (``part``'s
    first 4 channels added to the stream, the rest passed on)."""

    def __init__(self):
        super().__init__()
        self.stem, self.primary = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)
        self.cheap = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.dual, self.part, self.head = nn.Conv2d(6, 7, 1), nn.Conv2d(7, 6, 1), nn.Linear(6, 5)

    def forward(self, x):
        s = self.stem(x)
        p = self.primary(s)
        ghost = torch.cat([p, self.cheap(p)], dim=1)[:, :6]
        y = self.dual(torch.relu(ghost))
        s, d = s + y[:, :4], y[:, 4:]
        z = self.part(torch.relu(torch.cat([s, d], dim=1)))
        z = torch.cat([z[:, :4] + s, z[:, 4:]], dim=1)
        return self.head(z.mean((2, 3)))


def _regrouped(g, which, key_of):
    """A copy of graph ``g`` whose entries e of space ``which`` with ``key_of(e)`` move to a
    new free space of the same size (a grouping the trace did not choose)."""
    wrong = copy.deepcopy(g)
    sp = wrong.spaces[which]
    moved = [e for e in sp.entries if key_of(e)]
    sp.entries = [e for e in sp.entries if not key_of(e)]
    new = max(wrong.spaces) + 1
    wrong.spaces[new] = Space(new, sp.size, moved, groups=sp.groups)
    wrong.order.append(new)
    return wrong


def test_chunks_of_a_stream_are_its_parts():
    """The stream's 10 channels become two spaces: the 4 channels of chunks 0 and 1 (one space
    at offsets 0 and 4, since chunk 1 is added to chunk 0's conv output) and the 2 of chunk 2
    (offset 8); the depthwise convs live in the first, and mix's rows and columns in both (its
    output is added back to the stream). Only input and logits are fixed, and a random
    permutation of the 2 free spaces is invariant (< 1e-12 relative, float64; measured
    1.6e-16). Permuting chunk 1 independently of chunk 0 (its entries at offset 4 as a space
    of their own) changes the outputs (measured 0.14 relative; asserted > 1e-3)."""
    net = _ChainedChunks().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = trace(net, x)
    assert [s.reason for s in g.spaces.values() if s.fixed] == ["input", "logits"]
    stem = {s.id: sorted(e.offset for e in s.entries if e.key == "stem.weight")
            for s in g.free_spaces()}
    tied = next(i for i, offs in stem.items() if offs == [0, 4])
    assert g[tied].size == 4 and [s.size for s in g.free_spaces() if stem[s.id] == [8]] == [2]
    assert {e.key for e in g[tied].entries} >= {"convs.0.weight", "convs.1.weight"}
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12 and res["permuted_spaces"] == 2
    wrong = _regrouped(g, tied, lambda e: e.offset == 4)
    bad = permutation_check(net, wrong, x)
    assert not bad["invariant"] and bad["relative"] > 1e-3, bad


def test_a_layer_on_a_constant_joins_the_features_it_is_added_to():
    """proj reads a constant grid (its 4 input channels: a fixed space); its output is added
    to stem's, so proj's rows and bias move with stem's space: 2 free spaces (stem + proj,
    fc), invariant (< 1e-12; measured 1.1e-16). Leaving proj's rows in place while stem's
    move changes the outputs (measured 0.12 relative; asserted > 1e-3)."""
    net = _GridPosition().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = trace(net, x)
    assert [s.reason for s in g.spaces.values() if s.fixed] == [
        "input", "a constant read by proj", "logits"]
    joint = next(s for s in g.free_spaces() if "stem" in s.producers)
    assert joint.producers == ["stem", "proj"] and len(g.free_spaces()) == 2
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12
    wrong = copy.deepcopy(g)
    wrong[joint.id].entries = [e for e in joint.entries if not e.key.startswith("proj.")]
    bad = permutation_check(net, wrong, x)
    assert not bad["invariant"] and bad["relative"] > 1e-3, bad


def test_activation_matching_reads_each_part_and_recovers_a_planted_permutation():
    """The parts' features are read at the ReLU of the concatenation: the 4-channel space at
    offsets 0 and 4 (both occurrences as samples, `relu@parts:0,4:4`), the 2-channel one at 8.
    A copy with a random permutation of both (seed 3: [2, 3, 1, 0] and [1, 0], neither the
    identity) is matched back by activation matching on 64 random inputs exactly (max |Δ| 0.0
    over every tensor)."""
    from weightlab.alignment import permute_model, random_permutation
    from weightlab.graph import feature_reader
    from weightlab.matching.activation import activation_matching

    a = _ChainedChunks().double().eval()
    x = torch.randn(64, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    g = trace(a, x[:1])
    points = sorted(p for s in g.free_spaces() for p in s.feature_points)
    assert points == ["relu@parts:0,4:4", "relu@parts:8:2"]
    _, feats = feature_reader(a, g, points)(x[:3])
    assert feats["relu@parts:0,4:4"].shape == (6, 4, 5, 5)
    planted = random_permutation(g, torch.Generator().manual_seed(3))
    assert all(not torch.equal(p, torch.arange(len(p))) for p in planted.perms.values())
    b = permute_model(a, g, planted)
    al = activation_matching(g, a, b, [(x, torch.zeros(64, dtype=torch.long))])
    back = permute_model(b, g, al).state_dict()
    assert max(float((back[k] - v).abs().max()) for k, v in a.state_dict().items()) == 0.0


class _CrossedConcats(nn.Module):
    """cat(a: 4, b: 6) + cat(c: 6, d: 4): the sum's channels are cut at 4 and 6 on both
    sides, so b and c are each split in two."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 3, padding=1)
        self.c, self.d = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(10, 5)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1) + torch.cat([self.c(x), self.d(x)], 1)
        return self.head(torch.relu(y).mean((2, 3)))


def test_concatenations_with_different_boundaries_join_part_by_part():
    """The sum of the two concatenations has parts of 4, 2 and 4 channels: a with c's first
    4, b's first 2 with c's last 2, b's last 4 with d (rows of b.weight at offsets 0 and 2,
    of c.weight at 0 and 4); 3 free spaces, invariant (< 1e-12 relative, float64; measured
    1.2e-16)."""
    net = _CrossedConcats().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = trace(net, x)
    rows = sorted((s.size, e.key, e.offset) for s in g.free_spaces() for e in s.entries
                  if e.key.endswith(".weight") and e.axis == 0)
    assert rows == [(2, "b.weight", 0), (2, "c.weight", 4), (4, "a.weight", 0),
                    (4, "b.weight", 2), (4, "c.weight", 0), (4, "d.weight", 0)]
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12 and res["permuted_spaces"] == 3


def test_sliced_channel_ranges_are_pieces_of_their_space():
    """``x[:, a:b]`` cuts the channels at a and b like a chunk (graph.trace ``channel_range``):
    ``primary``'s 4 channels become two spaces of 2 (the slice at 6 of the ghost's 8 cuts the
    cheap copy, which is ``primary``'s space again, after 2 channels), one read by ``dual`` at
    offsets 0 and 4, the other at 2; the stream (stem, dual's and part's first 4 rows); the
    dense 3 (dual's last rows, part's columns 4–6); part's last 2 rows. Only input and logits
    are fixed; a random permutation of the 5 free spaces is invariant (< 1e-12 relative,
    float64; measured 2.6e-16). Leaving part's rows that are added to the stream in place, or
    moving the ghost's second copy apart from the first, changes the outputs (measured 0.47
    and 0.0066 relative; asserted > 1e-3)."""
    net = _Slices().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = trace(net, x)
    assert [s.reason for s in g.spaces.values() if s.fixed] == ["input", "logits"]
    reads = {s.id: sorted(e.offset for e in s.entries if (e.key, e.axis) == ("dual.weight", 1))
             for s in g.free_spaces()}
    assert sorted(reads.values()) == [[], [], [], [0, 4], [2]]
    stream = next(s for s in g.free_spaces() if "stem" in s.producers)
    assert stream.size == 4 and stream.producers == ["stem", "dual", "part"]
    assert sorted(s.size for s in g.free_spaces()) == [2, 2, 2, 3, 4]
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12 and res["permuted_spaces"] == 5
    ghost = next(i for i, offs in reads.items() if offs == [0, 4])
    for which, key_of in ((stream.id, lambda e: (e.key, e.axis) == ("part.weight", 0)),
                          (ghost, lambda e: e.key == "dual.weight" and e.offset == 4)):
        bad = permutation_check(net, _regrouped(g, which, key_of), x)
        assert not bad["invariant"] and bad["relative"] > 1e-3, bad
