"""Progress with what a researcher watches: epoch, loss, top-1, img/s and time left — a bar on a
terminal, periodic plain lines when stderr is piped (a cluster job's log)."""

from __future__ import annotations

import io
import json
import re

from weightlab.progress import StepBar, duration, format_fields


def test_plain_lines_when_piped_carry_the_fields_rate_and_eta():
    out = io.StringIO()  # not a terminal
    seen = iter(range(100))
    bar = StepBar("training", 10, unit="img", stream=out, interval=0.0,
                  stats=lambda: {"loss": 2.0 / (1 + next(seen)), "top-1": 0.5})
    bar.set(epoch="1/2")
    for _ in range(10):
        bar.advance(1, items=64)
    bar.stop()
    lines = out.getvalue().splitlines()
    assert bar.mode == "plain" and len(lines) == 10  # 9 periodic + the final one
    assert lines[0].startswith("training 1/10 (10%)  epoch 1/2  loss 2  top-1 50.00%")
    assert re.search(r"[\d,]+ img/s  ETA \d+:\d\d$", lines[0])
    assert lines[-1].startswith("training 10/10 (100%)") and "done in" in lines[-1]
    assert "ETA" not in lines[-1]


def test_plain_lines_are_periodic_not_per_step():
    out = io.StringIO()
    bar = StepBar("sweep", 1000, stream=out, interval=3600.0)
    for _ in range(1000):
        bar.advance()
    bar.stop()
    assert out.getvalue().count("\n") == 1  # only the final line within an hour


def test_an_unknown_total_counts_steps_without_percent_or_eta():
    """A sweep whose length the caller does not know (pfm without --k): steps only."""
    out = io.StringIO()
    bar = StepBar("pfm", None, stream=out, interval=0.0)
    for _ in range(3):
        bar.advance()
    bar.stop()
    lines = out.getvalue().splitlines()
    assert lines[0] == "pfm 1" and lines[-1].startswith("pfm 3  done in ")
    assert "%" not in out.getvalue() and "ETA" not in out.getvalue()


def test_off_is_silent_and_formatting_helpers():
    out = io.StringIO()
    bar = StepBar("x", 3, stream=out, mode="off")
    for _ in range(3):
        bar.advance()
    bar.stop()
    assert out.getvalue() == ""
    assert duration(3725) == "1:02:05" and duration(65) == "1:05"
    assert format_fields({"epoch": "3/20", "loss": 0.41234, "top-1": 0.8734, "x": None}) == \
        "epoch 3/20  loss 0.4123  top-1 87.34%"


def test_training_piped_logs_epoch_loss_top1_rate_and_eta(tmp_path, cli, monkeypatch):
    """2 epochs of a digits MLP (23 steps each) with a line every step: the loss in the lines
    is the running epoch's training loss, and the last line of an epoch equals what
    metrics.jsonl records for it."""
    monkeypatch.setenv("WEIGHTLAB_PROGRESS_INTERVAL", "0")
    code, _, err = cli("train", "mlp", "--data", "digits", "--epochs", "2", "--batch-size", "64",
                       "--param", "width=32", "--out", tmp_path / "run", "--device", "cpu")
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if re.match(r"training \d+/46 ", ln)]
    assert len(lines) >= 40, err[-500:]
    assert any("epoch 1/2" in ln for ln in lines) and "epoch 2/2" in lines[-1]
    for ln in lines[:-1]:
        assert re.search(r"loss [\d.]+  top-1 [\d.]+%  [\d,]+ img/s  ETA \d+:\d\d$", ln), ln
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text()
               .splitlines()]
    epoch1_last = [ln for ln in lines if "epoch 1/2" in ln][-1]
    loss = float(re.search(r"loss ([\d.]+)", epoch1_last).group(1))
    assert abs(loss - records[0]["train_loss"]) < 1e-3 * max(1.0, loss)
