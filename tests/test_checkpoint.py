"""Checkpoints: bit-exact round trips (tensors, masks, header), damaged files refused with one
line, no overwrite without force, atomic writes, and imports of plain torch state dicts with
``weights_only=True`` (arbitrary pickles are refused, never executed)."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from weightlab import checkpoint as ckpt_io
from weightlab import testing
from weightlab.errors import CheckpointError, UsageError
from weightlab.importer import import_state_dict

MLP = {"depth": 2, "width": 32}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A cifar_resnet20 with moved BN statistics and masks on two weights, saved once."""
    net = testing.tiny_model("cifar_resnet20", input_shape=(3, 32, 32))
    net.train()
    net(torch.randn(8, 3, 32, 32))  # running statistics and num_batches_tracked change
    gen = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(p.shape, generator=gen) > 0.3 for n, p in net.named_parameters()
             if n in ("layer1.0.conv1.weight", "linear.weight")}
    info = ckpt_io.model_info("cifar_resnet20", {}, (3, 32, 32), 10)
    ck = ckpt_io.from_model(net, info, masks=masks, data={"name": "cifar10"},
                            train={"lr": 0.1, "milestones": [1, 2]},
                            metrics={"test": {"top1": 0.5}}, provenance={"seed": 3},
                            extra={"notes": {"k": [1, 2]}})
    path = ckpt_io.save(ck, tmp_path_factory.mktemp("ckpt") / "r20.safetensors")
    return net, ck, path


@pytest.fixture
def resnet_ckpt(saved, tmp_path):
    """The saved checkpoint, copied for one test to damage."""
    net, ck, path = saved
    copy_path = tmp_path / path.name
    copy_path.write_bytes(path.read_bytes())
    return copy.deepcopy(net), ck, copy_path


def test_round_trip_is_bit_exact(resnet_ckpt):
    net, ck, path = resnet_ckpt
    back = ckpt_io.load(path)
    assert back.state.keys() == ck.state.keys()
    for k, v in ck.state.items():
        assert back.state[k].dtype == v.dtype and torch.equal(back.state[k], v), k
    assert back.state["bn1.num_batches_tracked"].item() == 1
    assert back.masks.keys() == ck.masks.keys()
    assert all(torch.equal(back.masks[k], ck.masks[k]) for k in ck.masks)
    assert (back.model, back.data, back.train, back.metrics) == (ck.model, ck.data, ck.train,
                                                                 ck.metrics)
    assert back.provenance["seed"] == 3 and "saved_at" in back.provenance
    assert back.extra == {"notes": {"k": [1, 2]}}
    header = ckpt_io.read_header(path)
    sp = header["sparsity"]
    kept = ck.masks["linear.weight"].float().mean().item()
    assert sp["layers"]["linear.weight"] == pytest.approx(1 - kept)
    total = sum(m.numel() for m in ck.masks.values())
    zeros = sum(int((~m).sum()) for m in ck.masks.values())
    assert sp["overall"] == pytest.approx(zeros / total) and 0.2 < sp["overall"] < 0.4
    # the rebuilt model is the original with its masks applied
    rebuilt, _ = ckpt_io.load_model(path)
    ckpt_io.apply_masks(net, ck.masks)
    net.eval(), rebuilt.eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(rebuilt(x), net(x))
    assert (rebuilt.linear.weight[~ck.masks["linear.weight"]] == 0).all()
    # save → load → save writes the same tensors
    again = ckpt_io.save(back, path.with_name("again.safetensors"))
    assert ckpt_io.read_header(again)["sha256"] == header["sha256"]


@pytest.mark.parametrize("keep", [0, 4, 100, 0.5, -16])
def test_truncated_file_is_refused(resnet_ckpt, keep):
    _, _, path = resnet_ckpt
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as e:
        ckpt_io.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_flipped_tensor_bytes_are_refused(resnet_ckpt, cli):
    _, _, path = resnet_ckpt
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x10  # inside the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        ckpt_io.load(path)
    code, out, err = cli("evaluate", path, "--data", "digits")
    assert code == 1 and err.strip() == (f"error: {path}: tensor data does not match its "
                                         f"checksum (corrupted file)")


def test_foreign_safetensors_and_newer_format_are_refused(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a weightlab checkpoint"):
        ckpt_io.load(plain)
    newer = tmp_path / "newer.safetensors"
    save_file({"w": torch.zeros(2)}, str(newer), metadata={"weightlab": json.dumps(
        {"format": 99, "model": {"name": "mlp"}})})
    with pytest.raises(CheckpointError, match="newer weightlab"):
        ckpt_io.load(newer)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ckpt_io.load(tmp_path / "absent.safetensors")


def test_no_overwrite_without_force(resnet_ckpt):
    _, ck, path = resnet_ckpt
    before = path.read_bytes()
    with pytest.raises(UsageError, match="exists; pass force=True"):
        ckpt_io.save(ck, path)
    assert path.read_bytes() == before
    ck.metrics = {"changed": True}
    ckpt_io.save(ck, path, force=True)
    assert ckpt_io.load(path).metrics == {"changed": True}


def test_failed_write_leaves_no_partial_file(resnet_ckpt, monkeypatch):
    import safetensors.torch

    _, ck, path = resnet_ckpt
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 1000)  # half-written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ckpt_io.save(ck, path.with_name("new.safetensors"))
    with pytest.raises(OSError):
        ckpt_io.save(ck, path, force=True)
    assert sorted(os.listdir(path.parent)) == ["r20.safetensors"]  # no new file, no temp file
    assert path.read_bytes() == before  # the old file is untouched


def _mlp_state():
    return testing.tiny_model("mlp", **MLP).state_dict()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module_prefix"])
def test_import_plain_state_dicts(tmp_path, wrap, cli):
    sd = _mlp_state()
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 160, "acc": torch.tensor(0.9)},
           "module_prefix": {"model": {f"module.{k}": v for k, v in sd.items()}}}[wrap]
    src = tmp_path / "model_1_160.pt"
    torch.save(obj, src)
    ck = import_state_dict(src, "mlp", "digits", tmp_path / "a.safetensors", model_params=MLP)
    assert all(torch.equal(ck.state[k], sd[k]) for k in sd)
    back = ckpt_io.load(tmp_path / "a.safetensors")
    assert back.provenance["kind"] == "imported" and back.model["params"]["width"] == 32
    assert back.data["name"] == "digits" and back.model["input_shape"] == [1, 8, 8]
    code, _, err = cli("import", src, "--model", "mlp", "--data", "digits", "-p", "depth=2",
                       "-p", "width=32", "--out", tmp_path / "b.safetensors")
    assert code == 0 and "wrote" in err
    net, _ = ckpt_io.load_model(tmp_path / "b.safetensors")
    assert all(torch.equal(net.state_dict()[k], sd[k]) for k in sd)
    code, _, err = cli("import", src, "--model", "mlp", "--data", "digits", "-p", "depth=2",
                       "-p", "width=32", "--out", tmp_path / "b.safetensors")
    assert code == 2 and "pass --force" in err


class Payload:
    """Unpickling this would run code: it must never be unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_import_refuses_arbitrary_pickles(tmp_path, cli):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pt"
    torch.save({"state_dict": _mlp_state(), "hook": Payload(marker)}, src)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        import_state_dict(src, "mlp", "digits", tmp_path / "x.safetensors", model_params=MLP)
    code, _, err = cli("import", src, "--model", "mlp", "--data", "digits")
    assert code == 1 and "weights_only=True" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "x.safetensors").exists()


def test_import_of_mismatched_weights_names_the_problem(tmp_path, cli):
    src = tmp_path / "wide.pt"
    torch.save(testing.tiny_model("mlp", depth=2, width=64).state_dict(), src)
    code, _, err = cli("import", src, "--model", "mlp", "--data", "digits", "-p", "depth=2",
                       "-p", "width=32", "--out", tmp_path / "w.safetensors")
    assert code == 1 and "tensors do not fit model mlp" in err and "size mismatch" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "w.safetensors").exists()
    for obj in ([1, 2, 3], {"epoch": 3, "optimizer": {"lr": 0.1}}):
        torch.save(obj, src)
        with pytest.raises(CheckpointError, match="holds no state dict"):
            import_state_dict(src, "mlp", "digits", tmp_path / "w.safetensors")
