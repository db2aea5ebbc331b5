"""Where records and admin keys live inside a registry's key space.

Model names are percent-encoded in keys because real model names contain
slashes (`Qwen/Qwen2.5-7B-Instruct`), and a prefix listing for one model must
never match another model whose name merely starts the same way.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

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


def instance_parts(key: str) -> tuple[str, str] | None:
    """(model, id) of an instance key; None for any other key."""
    if not key.startswith(INSTANCES):
        return None
    quoted, _, instance_id = key[len(INSTANCES) :].partition("/")
    return unquote(quoted), instance_id


def prefix_model(prefix: str) -> str | None:
    """The model an instance prefix is about; None for the prefix of every model."""
    rest = prefix[len(INSTANCES) :].rstrip("/")
    return unquote(rest) if rest else None
