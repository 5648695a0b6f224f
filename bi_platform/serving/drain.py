"""The drain state of one API process: set when the server is told to stop (SIGTERM).

From that moment ``/readyz`` answers 503 (``{"detail": "draining"}``) and every response
carries ``Connection: close`` (:func:`with_connection_close`, applied by the app's
middleware), so a keep-alive client finishes
the request it already sent and then opens its next connection elsewhere. The server side
(:class:`bi_platform.serving.server.DrainingServer`) stops accepting connections and
waits for the open ones to finish.

One :data:`PROCESS_DRAIN` per worker process is shared by the server and the app that
:func:`bi_platform.serving.server.app_factory` builds; tests give an app and a server
their own :class:`DrainState`.
"""

from __future__ import annotations

import logging
import threading
import time

from starlette.types import Message

logger = logging.getLogger(__name__)

__all__ = ["PROCESS_DRAIN", "DrainState", "with_connection_close"]


class DrainState:
    """Whether this process is draining, and since when (thread- and signal-safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.started_at: float | None = None

    @property
    def draining(self) -> bool:
        """True once :meth:`begin` was called."""
        return self._event.is_set()

    def begin(self) -> None:
        """Start draining (idempotent; safe in a signal handler)."""
        if not self._event.is_set():
            self.started_at = time.monotonic()
            self._event.set()


#: The drain state of this process (the server's and the app's, in a worker).
PROCESS_DRAIN = DrainState()


def with_connection_close(message: Message) -> Message:
    """An ASGI ``http.response.start`` message with ``Connection: close`` (any other
    ``Connection`` header replaced).

    Args:
        message: The response start message.

    Returns:
        A new message; ``message`` is not modified.
    """
    headers = [
        (name, value) for name, value in message.get("headers", []) if name.lower() != b"connection"
    ]
    headers.append((b"connection", b"close"))
    return {**message, "headers": headers}
