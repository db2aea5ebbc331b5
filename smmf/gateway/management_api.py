"""The multi-model management HTTP API: register a third-party API, list workers, take one offline, call a model.

    POST /api/server/register      {"model_name", "body", "req_url_template", "owner", "response_extract"}
    GET  /api/server/workers       every instance as {"model_name", "req_url_template"}
    POST /api/server/offline       {"model_name", "req_url_template"}  (and /online, to put it back)
    POST /api/v1/chat/completions  {"input", "model_name"} -> {"success", "msg", "result"}

Instances are named by model and URL here, as that API names them; an
OpenAI-protocol instance's URL is its endpoint.  A registered template is a
persistent record like `smmf register` writes, with an id derived from its
model and URL, so registering the same pair again replaces it.  Taking an
instance offline goes through its sidecar's admin key, as `smmf offline`
does, and answers once the sidecar has confirmed it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from ..admin import AdminAction
from ..client.request import Request
from ..client.types import ChatCompletion
from ..errors import APIError, SmmfError
from ..instance import Instance, Load, Protocol
from ..management import control
from ..registry import Registry
from ..template import HttpTemplate
from ..wire.errors import routing_failure
from ..wire.routes import PATHS
from .guard import AdminGuard
from .openai_api import INSTANCE, OpenAIAPI, read_json
from .replies import failed, failure_of, succeeded

__all__ = ["ManagementAPI", "template_id"]

#: Seconds an offline or online waits for the sidecar's confirmation.
CONFIRM_TIMEOUT = 30.0
#: Seconds a register waits for this gateway's own watch to bring the new record.
SEEN_TIMEOUT = 5.0


def template_id(model: str, url: str) -> str:
    """A registered API's id: the same for the same model and URL, so registering again replaces the record."""
    return "tpl-" + hashlib.blake2b(f"{model}\n{url}".encode(), digest_size=6).hexdigest()


def url_of(record: Instance) -> str:
    """What the management API calls an instance's `req_url_template`."""
    return record.template.url if record.template is not None else record.endpoint


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _text_field(body: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is required and must be a non-empty string")
    return value


def _validation_message(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'template'}: {err['msg'].removeprefix('Value error, ')}"
        for err in error.errors()
    )


class ManagementAPI:
    def __init__(self, openai: OpenAIAPI, registry: Registry, guard: AdminGuard) -> None:
        self.openai = openai
        self.registry = registry
        self.guard = guard

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/server/register", self.register),
            web.get("/api/server/workers", self.workers),
            web.post("/api/server/offline", self.offline),
            web.post("/api/server/online", self.online),
            web.post("/api/v1/chat/completions", self.chat),
        ]

    async def _object(self, request: web.Request) -> dict[str, Any]:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        return body

    def _refused(self, request: web.Request) -> web.Response | None:
        refusal = self.guard.refusal(request)
        return None if refusal is None else failed(*refusal)

    async def register(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        try:
            body = await self._object(request)
            model, url = _text_field(body, "model_name"), _text_field(body, "req_url_template")
            owner = _text_field(body, "owner", required=False)
            assert model is not None and url is not None
            template = HttpTemplate(
                url=url,
                body=body.get("body"),
                response_extract=body.get("response_extract") or "",
                method=body.get("method") or "POST",
                headers=body.get("headers") or {},
                api_key_env=body.get("api_key_env"),
            )
            record = Instance(
                id=template_id(model, url), model=model, endpoint=template.url, protocol=Protocol.TEMPLATE,
                backend="external", load=Load(reported=False), template=template,
                labels={"owner": owner} if owner else {},
            )  # fmt: skip
        except ValidationError as exc:
            return failed(400, _validation_message(exc))
        except ValueError as exc:
            return failed(400, str(exc))
        try:
            await self.registry.register(record, ttl=None)
        except SmmfError as exc:
            return failure_of(exc)
        # So that a call right after this answer finds the model here (other replicas see it when their watch does).
        await self.openai.client.cache.holds(model, record.id, SEEN_TIMEOUT)
        return succeeded(f"register LLM {model} succeed!")

    async def workers(self, request: web.Request) -> web.Response:
        try:
            records = (await self.registry.list()).records
        except SmmfError as exc:
            return failure_of(exc)
        data = [{"model_name": r.model, "req_url_template": url_of(r)} for r in sorted(records, key=lambda r: r.id)]
        return web.json_response({"success": True, "data": data})

    async def offline(self, request: web.Request) -> web.Response:
        return await self._control(request, AdminAction.OFFLINE, "remove")

    async def online(self, request: web.Request) -> web.Response:
        return await self._control(request, AdminAction.ONLINE, "online")

    async def _control(self, request: web.Request, action: AdminAction, verb: str) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        try:
            body = await self._object(request)
            model, url = _text_field(body, "model_name"), _text_field(body, "req_url_template")
        except ValueError as exc:
            return failed(400, str(exc))
        named = f"llm worker(model_name={model}, url={url})"
        try:
            assert model is not None and url is not None
            matches = [r for r in (await self.registry.list(model)).records if _same_url(url_of(r), url)]
            if not matches:
                return failed(404, f"no {named} is registered")
            for record in matches:
                await control(self.registry, record.id, action, timeout=CONFIRM_TIMEOUT, requested_by="smmf-gateway")
        except SmmfError as exc:
            return failure_of(exc)
        return succeeded(f"{verb} {named} succeed!")

    async def chat(self, request: web.Request) -> web.Response:
        try:
            body = await self._object(request)
            model, text = _text_field(body, "model_name"), body.get("input")
            if not isinstance(text, str):
                raise ValueError("input is required and must be a string")
        except ValueError as exc:
            return failed(400, str(exc))
        assert model is not None
        options = {k: body[k] for k in ("temperature", "max_tokens") if body.get(k) is not None}
        call = Request(
            model, PATHS["chat"], {"model": model, "messages": [{"role": "user", "content": text}], **options}
        )
        try:
            response, _ = await self.openai.send(call)
            reply = ChatCompletion.model_validate_json(response.content)
        except SmmfError as exc:
            failure = routing_failure(exc)
            if failure is None:
                return failure_of(exc)
            return failed(failure[0], exc.message if isinstance(exc, APIError) else str(exc))
        except ValueError as exc:
            return failed(502, f"{response.instance_id}: malformed response: {exc}")
        result = reply.choices[0].message.content if reply.choices else ""
        answer = succeeded("execute succeed", result=result or "")
        answer.headers[INSTANCE] = response.instance_id
        return answer
