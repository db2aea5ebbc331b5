"""Calling third-party HTTP APIs that are not OpenAI-shaped: rendering a request, extracting the answer.

Used by both the `template` worker backend and the client (which calls a
`protocol: template` instance directly), so the two can never disagree on
how a template is filled in or how an answer is found.

A template names placeholders in its URL, headers and JSON body:
`{USER_PROMPT}` (required), `{MODEL_TEMPERATURE}` and `{MODEL_NAME}`.  A
string that is exactly one placeholder becomes the value itself (so a
temperature stays a number); placeholders inside longer strings are
substituted as text.  The stored template is never mutated.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "ExtractError",
    "HttpTemplate",
    "RenderedRequest",
    "TemplateCallError",
    "call_template",
    "extract",
    "parse_path",
    "prompt_from_messages",
]

PROMPT = "{USER_PROMPT}"
_PLACEHOLDER = re.compile(r"\{(USER_PROMPT|MODEL_TEMPERATURE|MODEL_NAME)\}")
_SEGMENT = re.compile(r"^(?P<key>[^.\[\]]*)(?P<index>(\[\d*\])*)$")


class ExtractError(ValueError):
    """The response does not contain the path; says which segment was missing."""

    def __init__(self, path: str, segment: str, detail: str) -> None:
        self.path = path
        self.segment = segment
        super().__init__(f"response has no {segment!r} (first missing segment of {path!r}): {detail}")


class RenderedRequest(BaseModel):
    method: str
    url: str
    headers: dict[str, str]
    body: Any


def _contains_prompt(value: Any) -> bool:
    if isinstance(value, str):
        return PROMPT in value
    if isinstance(value, dict):
        return any(_contains_prompt(k) or _contains_prompt(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_prompt(v) for v in value)
    return False


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), value)
    if isinstance(value, dict):
        return {_fill(k, values): _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


class HttpTemplate(BaseModel):
    """How to call one third-party API: stored in records and given to the template backend."""

    model_config = ConfigDict(frozen=True)

    url: str
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    response_extract: str = ""
    #: Environment variable holding an API key, sent as `Authorization: Bearer <key>`; never the key itself.
    api_key_env: str | None = None

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        return value.upper()

    @field_validator("response_extract")
    @classmethod
    def _path(cls, value: str) -> str:
        parse_path(value)
        return value

    @model_validator(mode="after")
    def _needs_prompt(self) -> HttpTemplate:
        if not (_contains_prompt(self.url) or _contains_prompt(self.body) or _contains_prompt(self.headers)):
            raise ValueError(f"the request template must contain {PROMPT} in its URL, headers or body")
        return self

    def render(self, prompt: str, *, model: str, temperature: float | None) -> RenderedRequest:
        values = {"USER_PROMPT": prompt, "MODEL_NAME": model, "MODEL_TEMPERATURE": temperature}
        text_values = {k: "" if v is None else str(v) for k, v in values.items()}
        url_values = {k: quote(v, safe="") for k, v in text_values.items()}
        headers = {k: str(_fill(v, text_values)) for k, v in self.headers.items()}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise KeyError(f"environment variable {self.api_key_env} (the API key) is not set")
            headers.setdefault("Authorization", f"Bearer {key}")
        return RenderedRequest(
            method=self.method,
            url=_PLACEHOLDER.sub(lambda m: url_values[m.group(1)], self.url),
            headers=headers,
            body=_fill(self.body, values),
        )


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
        if key:
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


class TemplateCallError(Exception):
    """The third-party API failed: `status` is its HTTP status, or None when it could not be reached."""

    def __init__(self, status: int | None, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


async def call_template(
    session: aiohttp.ClientSession,
    template: HttpTemplate,
    prompt: str,
    *,
    model: str,
    temperature: float | None,
    timeout: float = 60.0,
) -> str:
    """Render, send and extract: the answer text, or `TemplateCallError` / `ExtractError`."""
    import aiohttp

    try:
        request = template.render(prompt, model=model, temperature=temperature)
    except KeyError as exc:
        raise TemplateCallError(None, str(exc.args[0])) from None
    body: dict[str, Any] = {}
    if isinstance(request.body, str):
        body["data"] = request.body
    elif request.body is not None:
        body["json"] = request.body
    try:
        async with session.request(
            request.method, request.url, headers=request.headers, timeout=aiohttp.ClientTimeout(total=timeout), **body
        ) as reply:
            text = await reply.text()
            if reply.status >= 400:
                retry = reply.headers.get("Retry-After")
                raise TemplateCallError(reply.status, text[:500], float(retry) if retry and retry.isdigit() else None)
    except aiohttp.ClientError as exc:
        raise TemplateCallError(None, f"{request.method} {_origin(request.url)} failed: {exc}") from None
    except TimeoutError:
        raise TemplateCallError(504, f"{request.method} {_origin(request.url)} timed out after {timeout:g}s") from None
    return extract(template.response_extract, text)


def _origin(url: str) -> str:
    """Scheme and host only: a URL may carry the prompt (or a key) in its query, which must not be logged."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def prompt_from_messages(messages: list[dict[str, Any]]) -> str:
    """The text a template API gets for a chat: the last user message (text parts joined)."""
    users = [m for m in messages if m.get("role") == "user"] or messages[-1:]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""
