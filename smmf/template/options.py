"""A template from a command line: the options `smmf worker template` and `smmf register` share."""

from __future__ import annotations

import argparse
import json

from pydantic import ValidationError

from ..errors import ConfigurationError
from .spec import HttpTemplate

__all__ = ["add_template_arguments", "parse_headers", "template_from_args"]


def add_template_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url-template", required=True, help="URL; may contain {USER_PROMPT}, {MODEL_NAME}")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--header", action="append", default=[], metavar="K:V", help="repeatable")
    parser.add_argument("--body", help="JSON body template with {USER_PROMPT} (and {MODEL_TEMPERATURE}, {MODEL_NAME})")
    parser.add_argument("--response-extract", default="", metavar="PATH", help="e.g. data.items[].attributes.answer")
    parser.add_argument("--api-key-env", metavar="VAR", help="environment variable holding a bearer key")


def parse_headers(pairs: list[str]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise ConfigurationError(f"--header takes NAME:VALUE, got {pair!r}")
        headers[name.strip()] = value.strip()
    return headers


def template_from_args(args: argparse.Namespace) -> HttpTemplate:
    """Build and validate an `HttpTemplate` from the options above; `ConfigurationError` names what is wrong."""
    try:
        body = json.loads(args.body) if args.body is not None else None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--body is not valid JSON: {exc}") from None
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
        raise ConfigurationError("; ".join(err["msg"].removeprefix("Value error, ") for err in exc.errors())) from None
