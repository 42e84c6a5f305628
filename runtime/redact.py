"""Credentials never leave in a record, a log line, a topic, a metric or a capture sidecar: a URL's user info is
replaced by ``***`` wherever the runtime prints or publishes it (``rtsp://admin:pw@cam/…`` → ``rtsp://***@cam/…``).
The real URL is used only to open the stream."""

from __future__ import annotations

import re

__all__ = ["redact_url"]

# scheme://userinfo@ — userinfo runs to the last '@' before the host (a password may hold '@' unescaped).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")


def redact_url(url: str) -> str:
    """``url`` with its user name and password replaced by ``***`` (unchanged when it has none)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}***@", url)
