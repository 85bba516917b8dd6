"""Parameter dataclasses: strings from the CLI coerce to their types; out-of-range values,
bad choices and unknown fields fail naming the field."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from weightlab.errors import ParamError, UsageError
from weightlab.params import build_params, describe, param, parse_assignments, to_dict


@dataclass
class P:
    steps: int = param(10, "iterations", min=1, max=1000)
    rate: float = param(0.5, "a fraction", min=0.0, max=1.0, min_exclusive=True)
    on: bool = param(False, "a switch")
    order: str = param("random", "visiting order", choices=("random", "forward", "backward"))
    layers: list[int] = param([1, 2], "layer indices", min=0)
    block: int | None = param(None, "block size (none: whole layer)", min=1)
    names: list[str] = param([], "names")


def test_strings_coerce_to_declared_types():
    p = build_params(P, {"steps": "1_000", "rate": "0.25", "on": "yes", "order": "forward",
                         "layers": "3, 4,5", "block": "128", "names": "a,b"})
    assert (p.steps, p.rate, p.on, p.order) == (1000, 0.25, True, "forward")
    assert p.layers == [3, 4, 5] and p.block == 128 and p.names == ["a", "b"]
    for text, value in [("true", True), ("1", True), ("ON", True), ("false", False),
                        ("no", False), ("0", False), ("off", False)]:
        assert build_params(P, {"on": text}).on is value
    assert build_params(P, {"block": "none"}).block is None
    assert build_params(P, {"steps": 7.0}).steps == 7  # TOML may give a float for an integer
    assert build_params(P, {"layers": []}).layers == []


def test_defaults_are_fresh_and_valid():
    a, b = build_params(P), build_params(P)
    a.layers.append(9)
    assert b.layers == [1, 2]  # a list default is not shared between instances
    assert to_dict(b) == {"steps": 10, "rate": 0.5, "on": False, "order": "random",
                          "layers": [1, 2], "block": None, "names": []}


@pytest.mark.parametrize("values, message", [
    ({"steps": "0"}, "m.steps: 0 must be >= 1"),
    ({"steps": 1001}, "m.steps: 1001 must be <= 1000"),
    ({"rate": "0"}, "m.rate: 0.0 must be > 0.0"),
    ({"rate": "1.5"}, "m.rate: 1.5 must be <= 1.0"),
    ({"layers": "1,-2"}, "m.layers: -2 must be >= 0"),
    ({"block": "0"}, "m.block: 0 must be >= 1"),
    ({"steps": "ten"}, "m.steps: expected an integer, got 'ten'"),
    ({"steps": True}, "m.steps: expected an integer, got True"),
    ({"rate": "half"}, "m.rate: expected a number, got 'half'"),
    ({"on": "maybe"}, "m.on: expected true or false, got 'maybe'"),
    ({"order": "forwards"}, "m.order: 'forwards' is not one of random, forward, backward "
                            "(did you mean 'forward'?)"),
    ({"stepz": "3"}, "m.stepz: unknown parameter (did you mean 'steps'?); known: steps, rate"),
])
def test_bad_values_name_the_field(values, message):
    with pytest.raises(ParamError) as e:
        build_params(P, values, prefix="m.")
    assert str(e.value).startswith(message)
    assert isinstance(e.value, UsageError)  # the CLI exits 2 on it


def test_dashes_in_keys_and_assignments():
    @dataclass
    class Q:
        max_iter: int = param(100, "sweeps", min=1)

    assert build_params(Q, {"max-iter": "5"}).max_iter == 5
    assert parse_assignments(["a=1", "b = x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ParamError, match="parameter 'novalue': expected key=value"):
        parse_assignments(["novalue"])


def test_describe_feeds_show_and_docs():
    rows = {r["name"]: r for r in describe(P)}
    assert rows["steps"] == {"name": "steps", "type": "int", "default": 10, "help": "iterations",
                             "min": 1, "max": 1000, "choices": None, "min_exclusive": False}
    assert rows["rate"]["min_exclusive"] is True
    assert rows["order"]["choices"] == ["random", "forward", "backward"]
    assert rows["layers"]["type"] == "list[int]" and rows["layers"]["default"] == [1, 2]
    assert rows["block"]["type"] == "int | None"


def test_every_registered_component_has_valid_defaults_and_described_params():
    from weightlab import plugins
    from weightlab.components import KINDS

    reg = plugins.registry()
    seen = 0
    for kind in KINDS:
        for e in reg.all(kind):
            e.cls.create({})  # the defaults pass their own validation
            for row in e.cls.parameters():
                assert row["help"], f"{e.qualified}.{row['name']} has no help text"
            seen += 1
    assert seen >= 11  # 4 model families + 7 datasets built in
