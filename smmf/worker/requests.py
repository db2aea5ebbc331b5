"""The OpenAI request shapes a worker accepts, and the `Delta` its backends produce.

Requests are validated by pydantic so every bad field becomes one clear 400
naming the parameter.  Unknown extra fields are accepted and ignored, as
OpenAI-compatible servers do, so newer SDKs keep working.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..wire.responses import Usage
from .error_responses import bad_request

__all__ = ["ChatRequest", "CompletionRequest", "Delta", "EmbeddingRequest", "Message", "parse", "parse_json"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(_Request):
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Request):
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ValueError("input must be a string or a list of strings")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


#: A JSON escape of a UTF-16 surrogate, `\uD800` to `\uDFFF` (hex digits in either case).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, or a 400 saying what is wrong with it.

    Python's parser accepts more than a worker can serve: nesting deep enough
    to exhaust the stack, integers of thousands of digits, and escaped lone
    surrogates (`"\\ud800"`) that fail later, in a tokenizer or on the way
    out.  Each of those is the caller's mistake, and a 400 here.  A surrogate
    can only come from a `\\uD800`-`\\uDFFF` escape (UTF-8 cannot carry one),
    so only a body holding such an escape is encoded again to look for a lone
    one; every other body is parsed once.
    """
    try:
        data = json.loads(raw)
    except RecursionError:
        raise bad_request("The request body is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(data, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            message = "The request body contains text that is not valid Unicode (a lone surrogate)."
            raise bad_request(message) from None
        except RecursionError:
            raise bad_request("The request body is nested too deeply.") from None
    return data


def parse(model: type[_Request], data: Any) -> Any:
    """Validate a request body; the first problem becomes a 400 naming its parameter."""
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"] if not isinstance(p, str) or not p.startswith("function-"))
        message = err["msg"].removeprefix("Value error, ")
        raise bad_request(f"Invalid value for {param!r}: {message}.", param=param or None) from None


@dataclass
class Delta:
    """A piece of generated text as a backend produces it; the last one carries finish_reason and usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
