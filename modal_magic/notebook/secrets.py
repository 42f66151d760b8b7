"""Spot variables that look like credentials, so they do not leave the machine by accident.

A cell that merely mentions ``OPENAI_API_KEY`` would otherwise ship the key to
a container. We hold such variables back unless the user names them with
``--in``. Names count only for string values (``tokens = tokenizer(text)`` is
not a secret; ``hf_token = "hf_…"`` is); values count whatever the name.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["credential_reason"]

_SECRET_NAME = re.compile(
    r"(api_?key|apikey|secret|passw(or)?d|pwd|token|credential|private_?key|access_?key|auth)", re.IGNORECASE)
_SECRET_VALUE = [
    (re.compile(r"^sk-[A-Za-z0-9_\-]{16,}"), "an OpenAI/Anthropic-style API key"),
    (re.compile(r"^(ghp|gho|ghu|ghs|github_pat)_[A-Za-z0-9_]{20,}"), "a GitHub token"),
    (re.compile(r"^hf_[A-Za-z0-9]{20,}"), "a Hugging Face token"),
    (re.compile(r"^AKIA[0-9A-Z]{16}$"), "an AWS access key id"),
    (re.compile(r"^xox[abprs]-[A-Za-z0-9\-]{10,}"), "a Slack token"),
    (re.compile(r"^(ak|as)-[A-Za-z0-9]{20,}"), "a Modal token"),
    (re.compile(r"^eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\."), "a JSON web token"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
]


def credential_reason(name: str, value: Any) -> str | None:
    """Why ``name = value`` looks like a credential, or ``None`` when it does not."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    for pattern, what in _SECRET_VALUE:
        if pattern.search(text):
            return f"its value looks like {what}"
    if _SECRET_NAME.search(name) and text:
        return "its name suggests a credential"
    return None
