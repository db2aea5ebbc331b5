"""A small third-party API for the template and proxy tests: an aiohttp app the test runs itself.

It speaks a little of OpenAI's API (chat and completions, streamed or not,
embeddings) and one non-OpenAI JSON endpoint, records every request it gets,
and fails on demand when a prompt says `fail <status>`.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

WORDS = ["Hello", " from", " upstream"]


@dataclass
class Upstream:
    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.post("/v1/chat/completions", self.generate),
                web.post("/v1/completions", self.generate),
                web.post("/v1/embeddings", self.embeddings),
                web.post("/template", self.template),
            ]
        )
        return app

    async def start(self) -> Upstream:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sock: socket.socket = site._server.sockets[0]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.seen.append(
            {"path": request.path, "query": dict(request.query), "headers": dict(request.headers), "body": body}
        )
        return body

    @staticmethod
    def _failure(text: str, request: web.Request) -> web.Response | None:
        """The failure a prompt asks for; a 401 echoes the key it got, as careless APIs do."""
        match = re.search(r"fail (\d{3})", text)
        if not match:
            return None
        status = int(match.group(1))
        headers = {"Retry-After": "7"} if status == 429 else {}
        message = f"upstream says {status}"
        if status == 401:
            message += f": bad key {request.headers.get('Authorization')}"
        error = {"error": {"message": message, "type": "test", "code": None, "param": None}}
        return web.json_response(error, status=status, headers=headers)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        chat = request.path.endswith("chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        if failure := self._failure(str(prompt), request):
            return failure
        usage = {
            "prompt_tokens": 11, "completion_tokens": len(WORDS), "total_tokens": 11 + len(WORDS),
            "prompt_tokens_details": {"cached_tokens": 7},
        }  # fmt: skip
        if not body.get("stream"):
            whole = {"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}, "finish_reason": "stop"}
            return web.json_response({"id": "up-1", "object": "chat.completion", "choices": [whole], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        def choice(text: str | None, finish: str | None) -> dict[str, Any]:
            if chat:
                return {"index": 0, "delta": {} if text is None else {"content": text}, "finish_reason": finish}
            return {"index": 0, "text": text or "", "finish_reason": finish}

        if chat:
            await response.write(
                _sse({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
            )
        for word in WORDS:
            await response.write(_sse({"choices": [choice(word, None)]}))
        await response.write(_sse({"choices": [choice(None, "stop")]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(_sse({"choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text)), 1.0, 0.5]}
            for i, text in enumerate(inputs)
        ]
        return web.json_response({"object": "list", "data": data, "usage": {"prompt_tokens": 2 * len(inputs)}})

    async def template(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if failure := self._failure(body["query"]["text"], request):
            return failure
        answer = f"echo: {body['query']['text']}"
        return web.json_response({"data": {"items": [{"attributes": {"answer": answer}}, {"attributes": {}}]}})


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()
