"""The one canonical JSON text of a value: memo, cache and seed keys.

Sorted keys, `str` for what JSON cannot hold. Seeds derive from these
strings (llm/serve.py, peers), so the format is fixed: changing it changes
every derived sample.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
  return json.dumps(value, sort_keys=True, default=str)


def digest(value: Any, size: int = 16) -> str:
  """A short hex digest of `value`'s canonical JSON."""
  return hashlib.blake2b(canonical_json(value).encode(), digest_size=size).hexdigest()
