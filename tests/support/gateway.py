"""A real `smmf gateway` process for the tests, with its admin token in the environment (never on its command line)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .processes import SmmfProcess

#: The environment variable the test gateways read their admin token from.
TOKEN_ENV = "SMMF_TEST_ADMIN_TOKEN"


@dataclass
class RunningGateway:
    process: SmmfProcess
    token: str

    @property
    def url(self) -> str:
        return self.process.url

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | bool | None = True
    ) -> tuple[int, Any, dict[str, str]]:
        """One request: (status, parsed JSON, headers); `token=True` sends the right token, a string that one."""
        headers = {} if token is None or token is False else self.auth(None if token is True else token)
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, json=body, headers=headers) as reply,
        ):
            return reply.status, await reply.json(content_type=None), dict(reply.headers)


def start_gateway(start_smmf: Callable[..., SmmfProcess], registry: str, *args: str) -> RunningGateway:
    token = secrets.token_urlsafe(24)
    process = start_smmf(
        "gateway", "--registry", registry, "--port", "0", "--admin-token-env", TOKEN_ENV, *args,
        env={TOKEN_ENV: token},
    )  # fmt: skip
    return RunningGateway(process, token)
