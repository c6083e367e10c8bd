"""gdslab.claims: a claim asserts with its value and bound, and logs one JSON line when asked."""

import json

import pytest

from gdslab.claims import LOG_VARIABLE, ClaimFailed, claim, margin, read_log


def test_a_claim_that_holds_returns_its_value_and_logs_nothing_unasked(monkeypatch, tmp_path):
    monkeypatch.delenv(LOG_VARIABLE, raising=False)
    assert claim("ratio", 2.5, ">", 1.3) == 2.5
    assert claim("share", 0.0, "==", 0) == 0.0
    assert list(tmp_path.iterdir()) == []


def test_a_failed_claim_names_itself_the_value_and_the_bound(monkeypatch):
    monkeypatch.delenv(LOG_VARIABLE, raising=False)
    with pytest.raises(ClaimFailed, match=r"claim 'bounce stages a file' does not hold: measured 0\.815, needs >= 0\.9"):
        claim("bounce stages a file", 0.815, ">=", 0.9)
    with pytest.raises(AssertionError):  # nbval and pytest see an assertion
        claim("nan never holds", float("nan"), "<", 1)


def test_every_value_is_logged_as_one_json_line_even_when_it_fails(monkeypatch, tmp_path):
    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv(LOG_VARIABLE, str(log))
    claim("a", 3, ">", 1, note="x")
    with pytest.raises(ClaimFailed):
        claim("b", 5, "<=", 4)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["claim"], e["value"], e["op"], e["threshold"], e["held"]) for e in lines] == [
        ("a", 3.0, ">", 1.0, True), ("b", 5.0, "<=", 4.0, False)]
    assert read_log(log)[0]["note"] == "x"


def test_bad_claims_are_refused_clearly(monkeypatch):
    monkeypatch.delenv(LOG_VARIABLE, raising=False)
    with pytest.raises(ValueError, match="unknown comparison '=>'"):
        claim("x", 1, "=>", 0)
    with pytest.raises(TypeError, match="numbers, not True/False"):
        claim("x", True, "==", 1)


def test_margin_is_the_distance_inside_the_bound():
    assert margin(1.5, ">", 1.3) == pytest.approx(0.2)
    assert margin(0.02, "<", 0.05) == pytest.approx(0.03)
    assert margin(0.07, "<=", 0.05) == pytest.approx(-0.02)
    assert margin(0.0, "==", 0.0) == 0.0 and margin(0.1, "==", 0.0) == pytest.approx(-0.1)


def test_a_log_line_that_is_not_a_claim_names_the_file_and_line(tmp_path):
    log = tmp_path / "bad.jsonl"
    log.write_text('{"claim": "a", "value": 1, "op": ">", "threshold": 0}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2 is not JSON"):
        read_log(log)
    log.write_text('{"claim": "a"}\n')
    with pytest.raises(ValueError, match="line 1 is not a claim"):
        read_log(log)
