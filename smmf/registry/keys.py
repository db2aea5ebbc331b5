"""Where records and admin keys live inside a registry's key space.

Model names are percent-encoded in keys because real model names contain
slashes (`Qwen/Qwen2.5-7B-Instruct`), and a prefix listing for one model must
never match another model whose name merely starts the same way.
"""

from __future__ import annotations

from urllib.parse import quote

INSTANCES = "instances/"
ADMIN = "admin/"


def model_prefix(model: str | None) -> str:
    """The prefix holding every instance of `model` (all models when None)."""
    return INSTANCES if model is None else f"{INSTANCES}{quote(model, safe='')}/"


def instance_key(model: str, instance_id: str) -> str:
    return model_prefix(model) + instance_id


def admin_key(instance_id: str) -> str:
    return ADMIN + instance_id


def key_id(key: str) -> str:
    """The instance id a key is about: its last segment, in both layouts."""
    return key.rsplit("/", 1)[-1]
