"""Secret references: ``env:NAME`` or ``file:/path``. Resolved at use, never stored in clear.

The database keeps only the reference; the value lives in the process environment or a mounted file
(Docker/Kubernetes secrets) and is read when a connector is built.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from connectors.base import ConnectorError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_secret_ref(ref: str) -> str:
    """Return ``ref`` if it is a well-formed reference; raise ValueError with a clear message if not."""
    if not isinstance(ref, str):
        raise ValueError("a secret reference must be a string like 'env:NAME' or 'file:/path'")
    scheme, sep, rest = ref.partition(":")
    if not sep or scheme not in ("env", "file") or not rest:
        raise ValueError(
            "a secret reference must be 'env:NAME' or 'file:/absolute/path' (the secret itself is never stored)"
        )
    if scheme == "env" and not _ENV_NAME.match(rest):
        raise ValueError(f"'{rest}' is not a valid environment variable name")
    if scheme == "file" and not rest.startswith("/"):
        raise ValueError("a file secret reference needs an absolute path")
    return ref


def resolve_secret_ref(ref: str) -> str:
    """Read the secret a reference points at. The error names the reference, never a value."""
    validate_secret_ref(ref)
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise ConnectorError(f"secret reference {ref} is not set in the worker's environment")
        return value
    try:
        return Path(rest).read_text().rstrip("\n")
    except OSError as exc:
        raise ConnectorError(f"secret reference {ref} cannot be read: {exc.strerror}") from None
