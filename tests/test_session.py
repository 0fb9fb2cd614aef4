"""The session: what the magics remember between cells, and the notes they give once."""

from __future__ import annotations

import pytest

from sm_magics.params import ParameterSet
from sm_magics.session import Session

BIG = ["word"] * 100  # 701 characters as JSON: over the 256 of a hyperparameter value
NOTE = ("Passed only through the params channel, not as hyperparameters: vocabulary (value is "
        "701 characters as JSON, over 256). The training code still sees them in `params`.")


def magics_of(ip):
    return ip.magics_manager.registry["SageMakerMagics"]


def test_the_channel_only_note_is_given_once_per_container_and_set_of_names():
    session = Session()

    assert session.channel_only_note("fraud", {"lr": 0.1, "vocabulary": BIG}) == NOTE
    assert session.channel_only_note("fraud", {"lr": 0.2, "vocabulary": BIG + ["more"]}) == ""
    assert session.channel_only_note("churn", {"vocabulary": BIG}) == NOTE
    again = session.channel_only_note("fraud", {"vocabulary": BIG, "stopwords": BIG})
    assert "stopwords (value is 701 characters" in again and "vocabulary" in again
    assert session.channel_only_note("fraud", {"lr": 0.1}) == ""


def test_what_changed_is_compared_with_the_containers_previous_run():
    session = Session(last_params={"fraud": {"lr": 0.1}})

    assert session.params_changed("fraud", {"lr": 0.1}) is None
    assert session.params_changed("churn", {"lr": 0.5}) is None
    assert session.params_changed("fraud", {"lr": 0.2}).rows == [("lr", "0.1", "0.2")]


def test_a_second_sandbox_start_keeps_the_environment_from_before_the_first():
    session = Session()
    session.save_environment({"AWS_REGION": None, "AWS_ENDPOINT_URL": "http://127.0.0.1:1"})
    session.save_environment({"AWS_REGION": "us-east-1"})

    assert session.take_saved_environment() == {"AWS_REGION": None,
                                                 "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    assert session.take_saved_environment() is None


def test_the_magics_keep_their_state_in_one_session_per_load(ip):
    ip.run_cell_magic("sm_params", "fraud", "lr = 0.05\n")
    magics = magics_of(ip)

    assert magics.session.parameter_sets["fraud"] == ParameterSet("fraud", {"lr": 0.05})
    assert magics.images is magics.session.images
    assert magics.runs is magics.session.runs
    with pytest.raises(AttributeError):
        magics.images = {}

    ip.run_line_magic("unload_ext", "sm_magics")
    ip.run_line_magic("load_ext", "sm_magics")
    assert "fraud" not in magics_of(ip).session.parameter_sets


@pytest.mark.docker
@pytest.mark.sandbox
def test_parameters_too_big_for_hyperparameters_are_named_once_before_the_job_starts(
        ip, sandbox, capsys):
    ip.run_cell_magic("sm_container", "train-big-params",
                      'print("words:", len(params["vocabulary"]))\n')
    ip.run_cell_magic("sm_params", "big", f"vocabulary = {BIG!r}\n")
    capsys.readouterr()

    first = ip.run_line_magic("sm_train", "train-big-params --params big --wait")
    first_out = capsys.readouterr().out
    second = ip.run_line_magic("sm_train", "train-big-params --params big --hp lr=0.1 --wait")
    second_out = capsys.readouterr().out

    assert first_out.splitlines()[0] == NOTE
    assert first_out.count(NOTE) == 1
    assert NOTE not in second_out
    assert second.status == first.status == "Completed"
    assert "vocabulary" not in first.describe()["HyperParameters"]
    assert "words: 100" in first.logs()
