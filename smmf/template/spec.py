"""A request template: how to call one third-party API, stored in records and given to the template backend.

A template names placeholders in its URL, headers and JSON body:
`{USER_PROMPT}` (required), `{MODEL_TEMPERATURE}` and `{MODEL_NAME}`.  A
string that is exactly one placeholder becomes the value itself (so a
temperature stays a number); placeholders inside longer strings are
substituted as text.  The stored template is never mutated.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .extract import parse_path

__all__ = ["PROMPT", "HttpTemplate", "RenderedRequest", "TemplateInputError", "check_http_url"]

PROMPT = "{USER_PROMPT}"
_PLACEHOLDER = re.compile(r"\{(USER_PROMPT|MODEL_TEMPERATURE|MODEL_NAME)\}")


class TemplateInputError(ValueError):
    """The caller's input cannot be put into this template (a line break into a header, say): the caller's fault."""


def check_http_url(value: str, what: str) -> str:
    """`value` if it is an absolute http(s) URL with a host; else ValueError naming `what`.

    Records are written by whoever can write the registry: a `file:` or
    `unix:` URL there must never reach a client's HTTP stack.
    """
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")
    if _PLACEHOLDER.search(parts.netloc):
        raise ValueError(f"{what} must not take its host from a placeholder")
    return value


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
    """How to call one third-party API."""

    model_config = ConfigDict(frozen=True)

    url: str
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    response_extract: str = ""
    #: Which credential the API needs: the name of an environment variable, never the key itself.  A
    #: client sends it only where its own configuration binds that variable to the URL's host.
    api_key_env: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value, "the URL template")

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

    def environment_key(self) -> str | None:
        """The key named by `api_key_env`, read from this process's environment.

        Only for a template this process's own operator configured (the
        template worker's command line).  A template read from a registry
        record never gets here: the client binds keys to hosts itself (see
        `smmf.client.trust`).
        """
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise KeyError(f"environment variable {self.api_key_env} (the API key) is not set")
        return key

    def render(
        self, prompt: str, *, model: str, temperature: float | None, api_key: str | None = None
    ) -> RenderedRequest:
        """The request to send; `api_key`, when given, goes in `Authorization: Bearer` unless a header sets it."""
        values = {"USER_PROMPT": prompt, "MODEL_NAME": model, "MODEL_TEMPERATURE": temperature}
        text_values = {k: "" if v is None else str(v) for k, v in values.items()}
        url_values = {k: quote(v, safe="") for k, v in text_values.items()}
        headers = {k: str(_fill(v, text_values)) for k, v in self.headers.items()}
        if any("\r" in v or "\n" in v for v in headers.values()):
            raise TemplateInputError("the prompt goes into an HTTP header here, and a header cannot hold a line break")
        if api_key:
            headers.setdefault("Authorization", f"Bearer {api_key}")
        return RenderedRequest(
            method=self.method,
            url=_PLACEHOLDER.sub(lambda m: url_values[m.group(1)], self.url),
            headers=headers,
            body=_fill(self.body, values),
        )
