"""Finding the answer in a third-party API's JSON response: `data.items[].attributes.answer`.

A list element is `[N]` (`[]` for the first), or a plain number as a segment of
its own (`choices.0.text`), as many API descriptions write it.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["ExtractError", "extract", "parse_path"]

_SEGMENT = re.compile(r"^(?P<key>[^.\[\]]*)(?P<index>(\[\d*\])*)$")


class ExtractError(ValueError):
    """The response does not contain the path; says which segment was missing."""

    def __init__(self, path: str, segment: str, detail: str) -> None:
        self.path = path
        self.segment = segment
        super().__init__(f"response has no {segment!r} (first missing segment of {path!r}): {detail}")


def parse_path(path: str) -> list[tuple[str, list[int | None]]]:
    """`data.items[].attributes.answer` → [("data", []), ("items", [None]), ...]; None is "first"."""
    if not path:
        return []
    parsed = []
    for part in path.split("."):
        match = _SEGMENT.match(part)
        if not match or (not match.group("key") and not match.group("index")):
            raise ValueError(f"invalid response path {path!r} at {part!r}: use keys, [] or [N], joined by dots")
        indexes = [None if i == "" else int(i) for i in re.findall(r"\[(\d*)\]", match.group("index"))]
        parsed.append((match.group("key"), indexes))
    return parsed


def extract(path: str, body: str) -> str:
    """The text at `path` in a JSON response body; the raw body when `path` is empty."""
    if not path:
        return body
    try:
        node: Any = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ExtractError(path, path.split(".")[0], f"the response is not JSON ({exc.msg})") from None
    for key, indexes in parse_path(path):
        if key.isdigit() and isinstance(node, list):
            if int(key) >= len(node):
                raise ExtractError(path, key, f"found list of length {len(node)}")
            node = node[int(key)]
        elif key:
            if not isinstance(node, dict) or key not in node:
                raise ExtractError(path, key, f"found {type(node).__name__}")
            node = node[key]
        for index in indexes:
            label = f"{key}[{'' if index is None else index}]"
            position = 0 if index is None else index
            if not isinstance(node, list) or position >= len(node):
                raise ExtractError(path, label, f"found {type(node).__name__} of length {_length(node)}")
            node = node[position]
    return node if isinstance(node, str) else json.dumps(node)


def _length(node: Any) -> int:
    return len(node) if isinstance(node, list | dict | str) else 0
