"""`template`: a third-party HTTP API that is not OpenAI-shaped, through a request template and a response path.

The answer comes back in OpenAI chat shape.  The prompt is the last user
message (or the completion prompt).  Token counts are not known for such
APIs; usage reports whitespace-separated words as an estimate.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator

import aiohttp
from pydantic import ValidationError

from ...templating import ExtractError, HttpTemplate, TemplateCallError, call_template, prompt_from_messages
from ..errors import upstream_error
from ..protocol import ChatRequest, CompletionRequest, Delta, Usage
from .base import Backend
from .upstream import upstream_failure


def parse_headers(pairs: list[str]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header takes NAME:VALUE, got {pair!r}")
        headers[name.strip()] = value.strip()
    return headers


def template_from_args(args: argparse.Namespace) -> HttpTemplate:
    """Build and validate an `HttpTemplate` from the shared command-line options."""
    try:
        body = json.loads(args.body) if args.body is not None else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--body is not valid JSON: {exc}") from None
    try:
        return HttpTemplate(
            url=args.url_template,
            method=args.method,
            headers=parse_headers(args.header),
            body=body,
            response_extract=args.response_extract,
            api_key_env=args.api_key_env,
        )
    except ValidationError as exc:
        raise ValueError("; ".join(err["msg"].removeprefix("Value error, ") for err in exc.errors())) from None


def add_template_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url-template", required=True, help="URL; may contain {USER_PROMPT}, {MODEL_NAME}")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--header", action="append", default=[], metavar="K:V", help="repeatable")
    parser.add_argument("--body", help="JSON body template with {USER_PROMPT} (and {MODEL_TEMPERATURE}, {MODEL_NAME})")
    parser.add_argument("--response-extract", default="", metavar="PATH", help="e.g. data.items[].attributes.answer")
    parser.add_argument("--api-key-env", metavar="VAR", help="environment variable holding a bearer key")


def prompt_text(request: ChatRequest | CompletionRequest) -> str:
    if isinstance(request, CompletionRequest):
        return request.text
    return prompt_from_messages([m.model_dump() for m in request.messages])


class TemplateBackend(Backend):
    name = "template"

    def __init__(self, template: HttpTemplate, timeout: float = 60.0) -> None:
        self.template = template
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_template_arguments(parser)
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds per upstream call")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TemplateBackend:
        return cls(template_from_args(args), args.timeout)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def generate(self, request: ChatRequest | CompletionRequest) -> AsyncIterator[Delta]:
        assert self._session is not None
        prompt = prompt_text(request)
        try:
            answer = await call_template(
                self._session, self.template, prompt,
                model=request.model, temperature=request.temperature, timeout=self.timeout,
            )  # fmt: skip
        except TemplateCallError as exc:
            raise upstream_failure(exc.status, exc.message, exc.retry_after) from None
        except ExtractError as exc:
            raise upstream_error(502, str(exc)) from None
        yield Delta(answer, "stop", Usage(len(prompt.split()), len(answer.split())))
