"""Calling a third-party API through its template: render, send, extract the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..wire.responses import Usage
from ..wire.retry_after import parse_retry_after
from .extract import extract
from .spec import HttpTemplate

if TYPE_CHECKING:
    import aiohttp

__all__ = ["TemplateCallError", "call_template", "prompt_from_messages", "word_usage"]


class TemplateCallError(Exception):
    """The third-party API failed: `status` is its HTTP status, or None when it could not be reached.

    Never leaves smmf: the worker answers it as an upstream error and the
    client raises it as an `APIError`.
    """

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
    api_key: str | None = None,
) -> str:
    """Render, send and extract: the answer text, or `TemplateCallError` / `ExtractError`."""
    import aiohttp

    request = template.render(prompt, model=model, temperature=temperature, api_key=api_key)
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
                retry_after = parse_retry_after(reply.headers.get("Retry-After"))
                raise TemplateCallError(reply.status, text[:500], retry_after)
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


def word_usage(prompt: str, answer: str) -> Usage:
    """Such APIs report no token counts: whitespace-separated words stand in for them."""
    return Usage.counted(len(prompt.split()), len(answer.split()))
