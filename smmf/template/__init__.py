"""Third-party HTTP APIs that are not OpenAI-shaped, called through a request template and a response path.

Used by both the `template` worker backend and the client (which calls a
`protocol: template` instance directly), so the two can never disagree on
how a template is filled in or how an answer is found.  `spec` is the
template and its rendering, `extract` finds the answer in a response,
`call` sends one request, and `options` reads a template from a command line.
"""

from .call import TemplateCallError, call_template, prompt_from_messages, word_usage
from .extract import ExtractError, extract, parse_path
from .spec import PROMPT, HttpTemplate, RenderedRequest, TemplateInputError, check_http_url

__all__ = [
    "PROMPT",
    "ExtractError",
    "HttpTemplate",
    "RenderedRequest",
    "TemplateCallError",
    "TemplateInputError",
    "call_template",
    "check_http_url",
    "extract",
    "parse_path",
    "prompt_from_messages",
    "word_usage",
]
