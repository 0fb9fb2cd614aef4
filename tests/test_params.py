"""Parameter sets: the %%sm_params cell, resolution, canonical JSON, diff and API limits."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from IPython.core.error import UsageError

from sm_magics import params
from sm_magics.params import ParameterSet


def magics_of(ip):
    return ip.magics_manager.registry["SageMakerMagics"]


def usage_error_of(call) -> str:
    with pytest.raises(UsageError) as caught:
        call()
    assert type(caught.value) is UsageError
    return str(caught.value)


# ---------------------------------------------------------------- %%sm_params


def test_params_cell_records_top_level_assignments_and_keeps_the_variables(ip):
    result = ip.run_cell_magic("sm_params", "fraud", (
        "learning_rate = 0.05\n"
        "n_estimators = 200\n"
        "features = ['amount', 'hour']\n"
        "model = {'depth': 3, 'loss': 'log'}\n"
        "use_gpu, seed = False, None\n"
    ))

    expected = {"learning_rate": 0.05, "n_estimators": 200, "features": ["amount", "hour"],
                "model": {"depth": 3, "loss": "log"}, "use_gpu": False, "seed": None}
    assert result == ParameterSet("fraud", expected)
    assert magics_of(ip).session.parameter_sets["fraud"].values == expected
    assert ip.user_ns["features"] == ["amount", "hour"]
    assert ip.user_ns["n_estimators"] == 200


def test_params_cell_shows_a_table_of_names_values_and_types(ip):
    result = ip.run_cell_magic("sm_params", "fraud", "lr = 0.05\nlayers = [64, 32]\n")

    lines = repr(result).splitlines()
    assert lines[0] == "parameter set fraud"
    assert lines[1].split() == ["name", "value", "type"]
    assert lines[3].split() == ["lr", "0.05", "float"]
    assert lines[4].split() == ["layers", "[64,", "32]", "list"]
    html = result._repr_html_()
    assert "<caption>parameter set fraud</caption>" in html
    assert "<td><code>[64, 32]</code></td>" in html


def test_names_inside_blocks_and_underscore_helpers_are_not_parameters(ip):
    result = ip.run_cell_magic("sm_params", "p", (
        "import math\n"
        "_scale = 10\n"
        "lr = 0.5 / _scale\n"
        "def helper():\n    inner = 1\n"
        "for i in range(3):\n    total = i\n"
        "epochs: int = 4\n"
        "epochs += 1\n"
    ))

    assert result.values == {"lr": 0.05, "epochs": 5}
    assert ip.user_ns["total"] == 2  # the cell ran in full


def test_running_the_cell_again_replaces_the_set(ip):
    ip.run_cell_magic("sm_params", "fraud", "lr = 0.05\nold = 1\n")
    ip.run_cell_magic("sm_params", "fraud", "lr = 0.1\n")

    assert magics_of(ip).session.parameter_sets["fraud"].values == {"lr": 0.1}


@pytest.mark.parametrize(("cell", "named"), [
    ("tags = {'a', 'b'}", "tags is a set"),
    ("shape = (224, 224)", "shape is a tuple, which would come back as a list"),
    ("threshold = float('nan')", "threshold is nan"),
    ("cfg = {'limit': [1, float('inf')]}", "cfg['limit'][1] is inf"),
    ("lookup = {1: 'a'}", "lookup has the key 1 (int)"),
    ("class Model: pass\nmodel = Model()", "model is a Model"),
    ("raw = b'abc'", "raw is a bytes"),
])
def test_values_json_cannot_hold_faithfully_are_a_usage_error_naming_the_variable(
        ip, cell, named):
    message = usage_error_of(lambda: ip.run_cell_magic("sm_params", "bad", cell))

    assert message.startswith("%%sm_params bad: the parameter ")
    assert named in message
    assert "bad" not in magics_of(ip).session.parameter_sets


@pytest.mark.parametrize(("line", "cell", "says"), [
    ("", "lr = 1", "the following arguments are required: name"),
    ("9lives", "lr = 1", "'9lives' is not a parameter set name"),
    ("p", "print('no assignment')", "the cell assigns no variables"),
    ("p", "lr = = 1", "line 1 of the cell is not valid Python"),
])
def test_unusable_cells_are_a_usage_error_before_running(ip, line, cell, says):
    message = usage_error_of(lambda: ip.run_cell_magic("sm_params", line, cell))

    assert says in message
    assert "lr" not in ip.user_ns


# ---------------------------------------------------------------- resolution


def test_resolution_is_defaults_then_sets_in_order_then_hp():
    base = ParameterSet("base", {"lr": 0.1, "depth": 3, "features": ["a"]})
    tuned = ParameterSet("tuned", {"lr": 0.2})

    doc = params.resolve({"lr": 0.01, "epochs": 10}, [base, tuned], ["epochs=20", "note=fast"])

    assert doc == {"depth": 3, "epochs": 20, "features": ["a"], "lr": 0.2, "note": "fast"}
    assert list(doc) == sorted(doc)


@pytest.mark.parametrize(("pair", "value"), [
    ("lr=0.1", 0.1), ("epochs=20", 20), ("layers=[64, 32]", [64, 32]),
    ("opt={'name': 'adam'}", {"name": "adam"}), ("amp=True", True), ("amp=true", True),
    ("seed=None", None), ("seed=null", None), ("optimizer=adam", "adam"),
    ("path=/data/train", "/data/train"), ("version='1.0'", "1.0"), ("version=1.0.0", "1.0.0"),
    ("empty=", ""), ("expr=a=b", "a=b"),
])
def test_hp_values_are_python_or_json_literals_else_strings(pair, value):
    key, parsed = params.parse_hp(pair)

    assert key == pair.split("=")[0]
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(("pair", "says"), [
    ("lr", "write KEY=VALUE"),
    ("=3", "write KEY=VALUE"),
    ("shape=(1, 2)", "the parameter shape cannot be passed to a training job: shape is a tuple"),
    ("big=1e999", "big is inf"),
])
def test_unusable_hp_pairs_are_a_usage_error(pair, says):
    assert says in usage_error_of(lambda: params.parse_hp(pair))


def test_an_unknown_parameter_set_is_a_usage_error_listing_the_known_ones():
    sets = params.ParameterSets()
    sets["fraud"] = ParameterSet("fraud", {"lr": 0.1})

    message = usage_error_of(lambda: sets.pick(["fraud", "frud"]))

    assert "no parameter set called frud (defined: fraud)" in message
    assert "%%sm_params frud" in message


# ---------------------------------------------------------------- canonical JSON and hash


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=8))
def test_canonical_json_round_trips_and_ignores_insertion_order(doc):
    for name, value in doc.items():
        params.validate(name, value, "test")
    text = params.canonical_json(doc)

    assert json.loads(text) == doc
    reordered = dict(reversed(list(doc.items())))
    assert params.canonical_json(reordered) == text
    assert params.sha256(reordered) == params.sha256(doc)


def test_canonical_json_is_compact_sorted_and_utf8():
    doc = {"b": {"y": 1, "x": [1.5, None]}, "a": "café"}

    assert params.canonical_json(doc) == '{"a":"café","b":{"x":[1.5,null],"y":1}}'
    assert params.sha256(doc) == params.sha256({"a": "café", "b": {"x": [1.5, None], "y": 1}})
    assert params.sha256(doc) != params.sha256({**doc, "a": "cafe"})


# ---------------------------------------------------------------- diff


def test_diff_lists_added_removed_and_changed_parameters():
    rows = params.diff({"lr": 0.1, "epochs": 1, "old": "x", "same": [1]},
                       {"lr": 0.2, "epochs": 1.0, "new": True, "same": [1]})

    assert [(r.name, r.change, r.before, r.after) for r in rows] == [
        ("epochs", "changed", 1, 1.0),
        ("lr", "changed", 0.1, 0.2),
        ("new", "added", None, True),
        ("old", "removed", "x", None),
    ]
    assert params.diff(None, {"lr": 0.1})[0].change == "added"
    assert params.diff({"a": 1}, {"a": 1}) == []


def test_diff_table_reads_as_text_and_html():
    table = params.diff_table({"lr": 0.1, "old": 1}, {"lr": 0.2, "new": "x"})

    assert repr(table).splitlines() == [
        "parameters changed since the previous run",
        "name  before  after",
        "----  ------  ---------",
        "lr    0.1     0.2",
        'new           "x"',
        "old   1       (removed)",
    ]
    assert "<th>before</th>" in table._repr_html_()


# ---------------------------------------------------------------- hyperparameters


def test_hyperparameters_keep_values_up_to_256_characters_and_list_the_rest():
    doc = {"fits": "x" * 254, "too_long": "x" * 255, "small": [1, 2], "name": "adam"}

    fit = params.hyperparameters(doc)

    assert fit.values == {"fits": '"' + "x" * 254 + '"', "name": '"adam"', "small": "[1,2]"}
    assert fit.left_out == {"too_long": "value is 257 characters as JSON, over 256"}
    assert "too_long (value is 257 characters as JSON, over 256)" in fit.note()
    assert params.hyperparameters({"a": 1}).note() == ""


def test_hyperparameters_stop_at_100_keys_without_truncating_anything():
    doc = {f"p{i:03d}": i for i in range(103)}

    fit = params.hyperparameters(doc)

    assert len(fit.values) == 100
    assert list(fit.left_out) == ["p100", "p101", "p102"]
    assert set(fit.left_out.values()) == {"over the limit of 100 hyperparameters"}
    assert all(json.loads(text) == doc[key] for key, text in fit.values.items())
