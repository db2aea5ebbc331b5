"""The registry's pure parts: the resync difference, backoff, and template extraction."""

from __future__ import annotations

import pytest

from smmf.backoff import Backoff
from smmf.registry.events import Delete, Put
from smmf.registry.watch import difference
from smmf.template import ExtractError, HttpTemplate, extract, parse_path


def test_the_difference_puts_what_changed_and_deletes_what_went() -> None:
    known = {"instances/m/a": 1, "instances/m/b": 2, "instances/m/c": 3}
    current = {"instances/m/a": 1, "instances/m/b": 20, "instances/m/d": 4}
    events = difference(known, current, revision=9)
    assert set(map(repr, events)) == {
        repr(Delete("instances/m/c", 9)),
        repr(Put("instances/m/b", 20, 9)),
        repr(Put("instances/m/d", 4, 9)),
    }


def test_no_difference_emits_nothing() -> None:
    assert difference({"k/a": 1}, {"k/a": 1}, 5) == []


def test_backoff_doubles_with_jitter_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [min(1.0, 0.1 * 2**n) for n in range(8)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_backoff_refuses_a_cap_below_its_base() -> None:
    with pytest.raises(ValueError):
        Backoff(base=2.0, cap=1.0)


BODY = '{"data": {"items": [{"attributes": {"answer": "yes"}}, {"attributes": {"answer": "no"}}]}}'


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("data.items[].attributes.answer", "yes"),
        ("data.items[1].attributes.answer", "no"),
        ("data.items[0].attributes", '{"answer": "yes"}'),
        ("data.items.1.attributes.answer", "no"),
        ("", BODY),
    ],
)
def test_extract_follows_keys_and_indexes(path: str, found: str) -> None:
    assert extract(path, BODY) == found


@pytest.mark.parametrize(
    ("path", "segment"),
    [
        ("data.rows[].x", "rows"),
        ("data.items[5].attributes", "items[5]"),
        ("data.items.5", "5"),
        ("nothing", "nothing"),
    ],
)
def test_extract_names_the_first_missing_segment(path: str, segment: str) -> None:
    with pytest.raises(ExtractError) as missing:
        extract(path, BODY)
    assert missing.value.segment == segment and path in str(missing.value)


def test_a_response_that_is_not_json_is_an_extract_error() -> None:
    with pytest.raises(ExtractError, match="not JSON"):
        extract("data", "<html>")


def test_bad_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid response path"):
        parse_path("a..b")


def test_a_template_fills_placeholders_and_keeps_numbers_numbers() -> None:
    template = HttpTemplate(
        url="https://api.example/ask?q={USER_PROMPT}",
        body={"question": "{USER_PROMPT}", "temperature": "{MODEL_TEMPERATURE}", "note": "for {MODEL_NAME}"},
    )
    rendered = template.render("a b", model="m", temperature=0.5)
    assert rendered.url == "https://api.example/ask?q=a%20b"
    assert rendered.body == {"question": "a b", "temperature": 0.5, "note": "for m"}
