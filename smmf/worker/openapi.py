"""The worker's OpenAPI document, built from the pydantic models that validate its requests.

Served at `/openapi.json`, so tools (and the test suite's fuzzer,
`schemathesis`) see exactly what the worker accepts: the schema cannot drift
from the validation because it is generated from it.  The document is per
worker: `model` is the one name this worker serves.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from ..wire.routes import PATHS, Route
from .requests import ChatRequest, CompletionRequest, EmbeddingRequest

__all__ = ["document"]

_REQUESTS: dict[Route, type[ChatRequest | CompletionRequest | EmbeddingRequest]] = {
    "chat": ChatRequest,
    "completions": CompletionRequest,
    "embeddings": EmbeddingRequest,
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _answers(ok: dict[str, Any]) -> dict[str, Any]:
    errors = {"description": "an error in OpenAI's shape", "content": {"application/json": {"schema": _ERROR}}}
    answers: dict[str, Any] = {"200": ok}
    for status in ("400", "404", "408", "413", "429", "502", "503", "504"):
        answers[status] = errors
    return answers


def document(model: str, routes: frozenset[Route]) -> dict[str, Any]:
    served = [route for route in _REQUESTS if route in routes]
    refs, schemas = models_json_schema(
        [(_REQUESTS[route], "validation") for route in served], ref_template="#/components/schemas/{model}"
    )
    components: dict[str, Any] = schemas.get("$defs", {})
    for route in served:
        components[_REQUESTS[route].__name__]["properties"]["model"] = {"type": "string", "enum": [model]}
    answer = {"type": "object"}
    paths: dict[str, Any] = {
        "/v1" + PATHS[route]: {
            "post": {
                "operationId": route,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": refs[(_REQUESTS[route], "validation")]}},
                },
                "responses": _answers(
                    {
                        "description": "the answer, whole or (with stream) as server-sent events",
                        "content": {"application/json": {"schema": answer}, "text/event-stream": {"schema": answer}},
                    }
                ),
            }
        }
        for route in served
    }
    plain = {"description": "ok", "content": {"application/json": {"schema": answer}}}
    paths["/v1/models"] = {"get": {"operationId": "models", "responses": {"200": plain}}}
    paths["/health"] = {"get": {"operationId": "health", "responses": {"200": plain, "503": plain}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"smmf worker: {model}", "version": "1"},
        "paths": paths,
        "components": {"schemas": components},
    }
