"""The one registry convention: a config field names an entry of a dict that one
module exports; an unknown name fails at start-up with the list of known ones."""

from __future__ import annotations

from typing import Mapping, TypeVar

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name, field: str) -> T:
  """`registry[name]`, else ValueError naming `field` (e.g. "config.method") and the choices."""
  if name not in registry:
    raise ValueError(f"{field}={name!r} is not known; choose one of {sorted(registry)}")
  return registry[name]
