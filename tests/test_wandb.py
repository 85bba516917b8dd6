"""Weights & Biases: installed by the set-up, checked before a run writes anything, and an
offline run records the run's metrics; a failed start leaves no empty run directory."""

from __future__ import annotations

import json
import struct
import sys

import pytest

TRAIN = ["train", "mlp", "--data", "digits", "--epochs", "2", "--batch-size", "64",
         "--param", "width=32", "--device", "cpu"]


def wandb_records(path):
    """The protobuf records of a wandb run file, read independently of wandb's SDK: LevelDB's
    log format — a 7-byte file header (':W&B', magic, version), then 32 KiB blocks of chunks,
    each with a 7-byte header (CRC32C 4 bytes, length 2 bytes LE, type 1 byte: 1 full,
    2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def test_wandb_is_installed_by_the_set_up():
    import importlib.metadata as md

    assert any(r.startswith("wandb") and "extra" not in r for r in md.requires("weightlab")), \
        "wandb is not a dependency of weightlab"
    import wandb  # noqa: F401


@pytest.mark.slow
def test_offline_run_records_the_metrics_of_every_epoch(tmp_path, cli, monkeypatch):
    """2 epochs on digits with --wandb-mode offline (≈12 s here, most of it wandb's service
    starting): the offline run directory's history holds each epoch's metrics, equal to
    metrics.jsonl's."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    code, _, err = cli(*TRAIN, "--out", run, "--wandb-mode", "offline")
    assert code == 0, err
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, list(run.rglob("*"))
    history = [{(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                for i in r.history.item}
               for r in wandb_records(files[0]) if r.WhichOneof("record_type") == "history"]
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    for h, rec in zip(history, logged, strict=True):
        assert h["iter"] == rec["iter"]
        for key in ("train_loss", "train_top1", "test_loss", "test_top1"):
            assert h[f"model1/{key}"] == pytest.approx(rec[key]), key


def test_missing_wandb_fails_before_anything_is_written(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb → ImportError
    run = tmp_path / "run"
    code, out, err = cli(*TRAIN, "--out", run, "--wandb-mode", "offline")
    assert code == 2
    assert "wandb is not installed" in err and "training 1 ×" not in err
    assert not run.exists()


def test_an_interrupted_start_leaves_no_empty_run_directory(tmp_path, cli, monkeypatch):
    from weightlab.training import loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt  # Ctrl-C while the models and loaders are being set up

    monkeypatch.setattr(loop, "build_models", interrupted)
    run = tmp_path / "nested" / "run"
    code, _, err = cli(*TRAIN, "--out", run)
    assert code == 130 and "interrupted" in err
    assert not run.exists()


def test_ctrl_c_during_data_loading_says_interrupted(tmp_path, cli, monkeypatch):
    """typer turns KeyboardInterrupt into a silent exit 130; the CLI says what happened."""
    from weightlab.data import bundle

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle, "load_data", interrupted)
    code, _, err = cli(*TRAIN, "--out", tmp_path / "run")
    assert (code, err.strip()) == (130, "interrupted")
    assert not (tmp_path / "run").exists()
