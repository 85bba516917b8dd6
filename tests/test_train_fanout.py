"""Training K models as K steps (``weightlab.train(…, executor=…)``, ``member=k``) and a recipe's
train step split into its models on an executor (weightlab.training.fanout, issue 17)."""

from __future__ import annotations

import json

import pytest
import weightlab
from weightlab.checkpoint_header import read_header
from weightlab.errors import UsageError

KW = dict(model="mlp", data="digits", epochs=2, batch_size=64, lr=0.05,
          model_param={"width": 32, "depth": 2})


def _digest(path) -> str:
    return read_header(path)["sha256"]


def _records(path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields (they differ from run to run)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]


def test_a_pair_as_two_steps_equals_the_pair_trained_side_by_side(tmp_path):
    """The models of a 2-model run never interact, so each member step (the run's model k
    alone: seed s + k − 1, its own data order) writes the tensors the side-by-side run writes
    for model k: equal SHA-256, equal result rows, and a metrics.jsonl with the same records in
    the same order (iteration, then model). A rerun with resume redoes no member; without
    resume or force the finished run is not overwritten."""
    here = weightlab.train(pair=True, out=tmp_path / "here", **KW)
    steps = weightlab.train(pair=True, out=tmp_path / "steps", executor="local", **KW)
    assert steps.to_json() == [{**r, "model": r["model"].replace("/here/", "/steps/")}
                               for r in here.to_json()]
    for k in (1, 2):
        assert _digest(tmp_path / "here" / f"model_{k}.safetensors") == \
            _digest(tmp_path / "steps" / f"model_{k}.safetensors")
        assert (tmp_path / "steps" / "steps" / f"model_{k}.json").is_file()
    assert _records(tmp_path / "here" / "metrics.jsonl") == \
        _records(tmp_path / "steps" / "metrics.jsonl")
    said: list[str] = []
    weightlab.train(pair=True, out=tmp_path / "steps", executor="local", resume=True,
                    log=said.append, **KW)
    assert sum("finished earlier, not redone" in s for s in said) == 2
    with pytest.raises(UsageError, match="already holds trained models"):
        weightlab.train(pair=True, out=tmp_path / "steps", executor="local", **KW)


def test_explicit_seeds_give_each_model_its_seed(tmp_path):
    """seeds=3,7: model 1 is the first model of a pair seeded 3, model 2 the single model of
    a run seeded 7 (init and data order follow the model's seed); member=2 trains that model
    alone into model_2 of the run."""
    weightlab.train(pair=True, seed=3, out=tmp_path / "pair3", **KW)
    weightlab.train(seed=7, out=tmp_path / "one7", **KW)
    weightlab.train(seeds="3,7", out=tmp_path / "seeds", executor="local", **KW)
    weightlab.train(seeds=[3, 7], member=2, out=tmp_path / "member", **KW)
    assert _digest(tmp_path / "seeds" / "model_1.safetensors") == \
        _digest(tmp_path / "pair3" / "model_1.safetensors")
    assert _digest(tmp_path / "seeds" / "model_2.safetensors") == \
        _digest(tmp_path / "one7" / "model_1.safetensors") == \
        _digest(tmp_path / "member" / "model_2.safetensors")
    assert not (tmp_path / "member" / "model_1.safetensors").exists()
    assert read_header(tmp_path / "seeds" / "model_2.safetensors")["provenance"]["seed"] == 7


@pytest.mark.parametrize("extra, message", [
    ({"pair": True, "member": 3}, "member=3: the run trains 2 model"),
    ({"seeds": "1,2,3", "models": 2}, "gives 3 models, but models=2"),
    ({"seeds": "1,1"}, "a seed appears twice"),
    ({"seeds": "1,x"}, "expected comma-separated integers"),
    ({"pair": True, "lmc_freq": 0.5, "executor": "local"}, "cannot fan out"),
    ({"pair": True, "data": "nosuch", "executor": "local"}, "unknown dataset 'nosuch'"),
])
def test_bad_fan_out_options_are_one_clear_line(tmp_path, extra, message):
    with pytest.raises(UsageError, match=message):
        weightlab.train(out=tmp_path / "x", **{**KW, **extra})


RECIPE = """
title = "pair then merge"

[[step]]
name = "pair"
do = "train"
model = "mlp"
param = { width = 32, depth = 2 }
data = "digits"
epochs = 2
batch_size = 64
lr = 0.05
pair = true

[[step]]
name = "merge"
do = "merge"
checkpoints = ["${pair.model_1}", "${pair.model_2}"]
matcher = "weight"

[[report]]
title = "midpoint"
each = ["merge"]
columns = ["step", "midpoint"]
row = ["${each.name}", "${each.result.evaluation.-1.top1}"]
"""


def test_a_recipe_on_an_executor_trains_a_pair_as_two_steps(tmp_path):
    """On an executor the recipe's pair step becomes two member steps of the graph (records
    pair/steps/model_1.json and model_2.json) and a gathering step; the report, the
    checkpoints and the step's result equal the run without an executor, and a second run
    reuses everything."""
    from weightlab import executors
    from weightlab.recipes import Runner, load

    path = tmp_path / "r.toml"
    path.write_text(RECIPE)
    here = Runner(load(path), tmp_path / "here", echo=lambda m: None).run()
    with executors.create("local") as ex:
        there = Runner(load(path), tmp_path / "ex", echo=lambda m: None, executor=ex).run()
        again = Runner(load(path), tmp_path / "ex", echo=lambda m: None, executor=ex).run()
    assert there["reports"][0]["rows"] == here["reports"][0]["rows"]
    for k in (1, 2):
        assert (tmp_path / "ex" / "pair" / "steps" / f"model_{k}.json").is_file()
        assert _digest(tmp_path / "ex" / "pair" / f"model_{k}.safetensors") == \
            _digest(tmp_path / "here" / "pair" / f"model_{k}.safetensors")
    result = json.loads((tmp_path / "ex" / "pair" / "result.json").read_text())
    assert [r["test_top1"] for r in result] == \
        [r["test_top1"] for r in json.loads((tmp_path / "here" / "pair" / "result.json")
                                            .read_text())]
    assert all(s["ran"] for s in there["steps"]) and not any(s["ran"] for s in again["steps"])
