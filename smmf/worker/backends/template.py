"""`template`: a third-party HTTP API that is not OpenAI-shaped, through a request template and a response path.

The answer comes back in OpenAI chat shape.  The prompt is the last user
message (or the completion prompt).  Token counts are not known for such
APIs; usage reports whitespace-separated words as an estimate.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp

from ...template import (
    ExtractError,
    HttpTemplate,
    TemplateCallError,
    TemplateInputError,
    call_template,
    prompt_from_messages,
    word_usage,
)
from ...template.options import add_template_arguments, template_from_args
from ..error_responses import bad_request, upstream_error
from ..requests import ChatRequest, CompletionRequest, Delta
from .base import Backend
from .upstream_errors import upstream_failure


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

    def _key(self) -> str | None:
        """This worker's own key: its operator named the variable on its command line."""
        try:
            return self.template.environment_key()
        except KeyError as exc:
            raise upstream_failure(None, str(exc.args[0])) from None

    async def generate(self, request: ChatRequest | CompletionRequest) -> AsyncIterator[Delta]:
        assert self._session is not None
        prompt = prompt_text(request)
        key = self._key()
        try:
            answer = await call_template(
                self._session, self.template, prompt,
                model=request.model, temperature=request.temperature, timeout=self.timeout, api_key=key,
            )  # fmt: skip
        except TemplateInputError as exc:
            raise bad_request(str(exc)) from None
        except TemplateCallError as exc:
            raise upstream_failure(exc.status, exc.message, exc.retry_after, sent=key) from None
        except ExtractError as exc:
            raise upstream_error(502, str(exc)) from None
        yield Delta(answer, "stop", word_usage(prompt, answer))
