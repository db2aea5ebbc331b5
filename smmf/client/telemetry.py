"""OpenTelemetry for client calls: one span per call with GenAI semantic-convention attributes, two histograms.

Active only when OpenTelemetry is installed (the `otel` extra); otherwise
every hook is a no-op and nothing is imported.  Prompt and completion text
are recorded only with `capture_content=True`: they are often private.

`feedback(response_id, score)` attaches a user's rating to the call that
produced that response: the call's span has ended by then, so the rating is
a child span of it (same trace), which trace backends show together.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from .peer import Peer

#: Responses remembered for `feedback()`.
FEEDBACK_MEMORY = 10_000
#: How often an idle telemetry looks again for a tracer provider set by the application.
PROVIDER_RECHECK = 1.0


def available() -> bool:
    return importlib.util.find_spec("opentelemetry") is not None


def generated_text(result: Any) -> str | None:
    """The generated text of a result or chunk, for content capture."""
    choices = getattr(result, "choices", None)
    if not choices:
        return None
    choice = choices[0]
    if hasattr(choice, "message"):
        return choice.message.content
    if hasattr(choice, "delta"):
        return choice.delta.content
    return getattr(choice, "text", None)


class Call:
    """Telemetry of one call; every method is safe to call when telemetry is off."""

    def __init__(self, telemetry: Telemetry | None, operation: str, body: dict[str, Any], policy: str) -> None:
        self._t = telemetry if telemetry is not None and telemetry.active() else None
        self._started = time.monotonic()
        self._first: float | None = None
        self._body = body
        self._span: Any = None
        if self._t is None:
            return
        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.system": "smmf",
            "gen_ai.request.model": body.get("model", ""),
            "smmf.policy": policy,
            "smmf.retries": 0,
        }
        for field, name in (("temperature", "temperature"), ("max_tokens", "max_tokens"), ("top_p", "top_p")):
            if body.get(field) is not None:
                attributes[f"gen_ai.request.{name}"] = body[field]
        self._span = self._t.tracer.start_span(
            f"{operation} {body.get('model', '')}", kind=self._t.span_kind_client, attributes=attributes
        )
        if self._t.capture_content:
            prompt = body.get("messages", body.get("prompt", body.get("input")))
            self._span.add_event("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps(prompt)})

    @property
    def recording(self) -> bool:
        """Whether this call has a span (telemetry is on)."""
        return self._span is not None

    @property
    def capturing(self) -> bool:
        """Whether the generated text goes into the span."""
        return self._t is not None and self._t.capture_content

    def instance(self, peer: Peer) -> None:
        if self._span is None:
            return
        parts = urlsplit(peer.record.endpoint)
        self._span.set_attribute("server.address", parts.hostname or peer.record.endpoint)
        if parts.port:
            self._span.set_attribute("server.port", parts.port)
        self._span.set_attribute("smmf.instance.id", peer.id)

    def retry(self, attempt: int) -> None:
        if self._span is not None:
            self._span.set_attribute("smmf.retries", attempt)

    def first_token(self) -> None:
        if self._first is None:
            self._first = time.monotonic()

    def finish(self, result: Any = None, error: BaseException | None = None, text: str | None = None) -> None:
        if self._t is None or self._span is None:
            return
        span, self._span = self._span, None
        duration = time.monotonic() - self._started
        attributes = {"gen_ai.request.model": self._body.get("model", "")}
        usage = getattr(result, "usage", None)
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        response_id = getattr(result, "id", None)
        if response_id:
            span.set_attribute("gen_ai.response.id", response_id)
            self._t.remember(response_id, span.get_span_context())
        if self._first is not None:
            ttft = self._first - self._started
            span.set_attribute("smmf.time_to_first_token_s", ttft)
            self._t.ttft.record(ttft, attributes)
        if self._t.capture_content:
            text = generated_text(result) if text is None else text
            if text is not None:
                span.add_event("gen_ai.content.completion", {"gen_ai.completion": text})
        if error is not None:
            span.record_exception(error)
            span.set_status(self._t.status_error, str(error))
            attributes["error.type"] = type(error).__name__
        self._t.duration.record(duration, attributes)
        span.end()


class Telemetry:
    def __init__(self, *, capture_content: bool = False, tracer_provider: Any = None, meter_provider: Any = None):
        self.enabled = available()
        self.capture_content = capture_content
        self._responses: OrderedDict[str, Any] = OrderedDict()
        self._explicit = tracer_provider is not None
        self._global_set = False
        self._recheck_at = 0.0
        if not self.enabled:
            return
        from opentelemetry import metrics, trace
        from opentelemetry.trace import SpanKind, StatusCode

        self._trace = trace
        self.tracer = trace.get_tracer("smmf.client", tracer_provider=tracer_provider)
        meter = metrics.get_meter("smmf.client", meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Call duration"
        )
        self.ttft = meter.create_histogram(
            "smmf.client.time_to_first_token", unit="s", description="Time to the first streamed chunk"
        )
        self.span_kind_client = SpanKind.CLIENT
        self.status_error = StatusCode.ERROR

    def active(self) -> bool:
        """Whether spans go anywhere: an explicit provider was given, or the application set a real one.

        OpenTelemetry's global provider is looked up (an environment read
        each time) at most every `PROVIDER_RECHECK` seconds, so an idle
        telemetry costs the request path almost nothing; once set, a global
        provider cannot be replaced, so a positive answer is kept.
        """
        if not self.enabled:
            return False
        if self._explicit or self._global_set:
            return True
        now = time.monotonic()
        if now >= self._recheck_at:
            self._recheck_at = now + PROVIDER_RECHECK
            placeholders = (self._trace.ProxyTracerProvider, self._trace.NoOpTracerProvider)
            self._global_set = not isinstance(self._trace.get_tracer_provider(), placeholders)
        return self._global_set

    def call(self, operation: str, body: dict[str, Any], policy: str) -> Call:
        return Call(self, operation, body, policy) if self.active() else _IDLE

    def remember(self, response_id: str, context: Any) -> None:
        self._responses[response_id] = context
        if len(self._responses) > FEEDBACK_MEMORY:
            self._responses.popitem(last=False)

    def feedback(self, response_id: str, score: float, comment: str | None = None) -> bool:
        """Record a rating against the span of `response_id`; False when that response is not known."""
        if not self.enabled:
            return False
        context = self._responses.get(response_id)
        if context is None:
            return False
        parent = self._trace.set_span_in_context(self._trace.NonRecordingSpan(context))
        attributes: dict[str, Any] = {"gen_ai.response.id": response_id, "smmf.feedback.score": score}
        if comment is not None:
            attributes["smmf.feedback.comment"] = comment
        self.tracer.start_span("gen_ai.feedback", context=parent, attributes=attributes).end()
        return True


#: The call every request shares while telemetry is off: all its hooks do nothing.
_IDLE = Call(None, "", {}, "")
