"""`ikproxy.model`: `Progress` and `Results` to their JSON wire form and back, and what
`from_json` refuses (docs/protocol.md)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from ikproxy.io import ImageIO, TaskIO
from ikproxy.model import Progress, Results, State, parse_eta
from ikproxy.testing import TINY_PNG

RESULTS = Results((ImageIO.from_bytes(TINY_PNG), TaskIO("answer", {"value": 42})), uuid="u-1")


def test_results_wire_form_and_back() -> None:
    wire = RESULTS.to_json()
    assert wire == {
        "uuid": "u-1",
        "outputs": [{"image": ImageIO.from_bytes(TINY_PNG).to_base64()}, {"answer": {"value": 42}}],
    }
    back = Results.from_json(json.loads(json.dumps(wire)))
    assert back.uuid == "u-1"
    assert back.get_output(0, expect=ImageIO).to_bytes() == TINY_PNG
    assert back.get_output(1, expect=TaskIO) == TaskIO("answer", {"value": 42})
    assert back.to_json() == wire
    assert len(back) == 2
    assert list(back) == back.get_outputs()


def test_results_outputs_default_to_none_and_become_a_tuple() -> None:
    assert Results.from_json({}) == Results()
    assert Results([TaskIO("a", 1)]).outputs == (TaskIO("a", 1),)  # type: ignore[arg-type]


def test_get_output_says_what_is_wrong() -> None:
    with pytest.raises(
        IndexError, match=r"^output index 2 out of range: the run has 2 output\(s\)$"
    ):
        RESULTS.get_output(2)
    with pytest.raises(TypeError, match=r"^output 1 is TaskIO \('answer'\), not ImageIO$"):
        RESULTS.get_output(1, expect=ImageIO)


def test_a_final_progress_wire_form_and_back() -> None:
    final = Progress(
        State.SUCCESS, (0, 0), run_id="r", uuid="u-1", name="t", fraction=1.0, results=RESULTS
    )
    wire = final.to_json()
    assert wire == {
        "state": "SUCCESS",
        "eta": [0, 0],
        "run_id": "r",
        "uuid": "u-1",
        "name": "t",
        "fraction": 1.0,
        "results": RESULTS.to_json(),
    }
    back = Progress.from_json(json.loads(json.dumps(wire)))
    assert back.done
    assert back.to_json() == wire


def test_a_progress_without_results_has_no_results_key() -> None:
    progress = Progress("STARTED", (1000, None), fraction=0.25)
    assert progress.to_json() == {
        "state": "STARTED",
        "eta": [1000, None],
        "run_id": None,
        "uuid": None,
        "name": None,
        "fraction": 0.25,
    }
    assert Progress.from_json(progress.to_json()) == progress
    assert not progress.done


def test_any_state_string_goes_through_and_missing_fields_are_null() -> None:
    assert Progress.from_json({"state": "QUEUED_ELSEWHERE"}) == Progress("QUEUED_ELSEWHERE")


def test_eta_bounds_are_rounded_to_milliseconds() -> None:
    assert parse_eta([1.4, 2.6]) == (1, 3)
    assert parse_eta(None) == (None, None)
    assert Progress.from_json({"state": "S", "eta": [None, 5]}).eta == (None, 5)
    assert Progress.from_json({"state": "S", "fraction": 1}).fraction == 1.0


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ([], "progress must be a JSON object, not list"),
        ({}, "progress.state must be a string"),
        ({"state": 1}, "progress.state must be a string"),
        ({"state": "S", "fraction": True}, "progress.fraction must be a number or null"),
        ({"state": "S", "fraction": "0.5"}, "progress.fraction must be a number or null"),
        ({"state": "S", "fraction": float("nan")}, "progress.fraction must be a number or null"),
        ({"state": "S", "fraction": 1.5}, "fraction must be between 0 and 1, not 1.5"),
        ({"state": "S", "eta": [1]}, "eta must be a list of two numbers (milliseconds) or nulls"),
        ({"state": "S", "eta": "12"}, "eta must be a list of two numbers (milliseconds) or nulls"),
        (
            {"state": "S", "eta": [1, True]},
            "eta must be a list of two numbers (milliseconds) or nulls",
        ),
        (
            {"state": "S", "eta": [1, float("inf")]},
            "eta must be a list of two numbers (milliseconds) or nulls",
        ),
        ({"state": "S", "run_id": 3}, "progress.run_id must be a string or null"),
        ({"state": "S", "results": []}, "results must be a JSON object, not list"),
        ({"state": "S", "results": {"outputs": {}}}, "results.outputs must be a list"),
        ({"state": "S", "results": {"uuid": 1}}, "results.uuid must be a string or null"),
        (
            {"state": "S", "results": {"outputs": [{"a": 1, "b": 2}]}},
            "an input or output must be a JSON object with exactly one key (its kind)",
        ),
    ],
)
def test_a_malformed_wire_object_is_a_value_error_saying_what(wire: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        Progress.from_json(wire)
    assert str(refused.value) == message
