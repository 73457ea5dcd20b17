"""Waiting on a real signal instead of sleeping a guessed time.

`wait_for(predicate, timeout, what)` polls `predicate` every `interval` seconds until it
returns something truthy (which it returns), or fails with an AssertionError that names `what`
once `timeout` is over. A test that waits this way is as fast as the system allows and fails
with a reason, not with a stale read: wait for the counter file to be rewritten, for tcpdump to
say "listening on", for a pod to be Ready, never for "about a second".

`Output` does the same for a child process's pipe: it collects what the process writes,
without blocking, until the text contains what the test is waiting for.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str,
             interval: float = 0.05) -> T:
    """Poll until `predicate()` is truthy and return it; AssertionError naming `what` when it
    still is not after `timeout` seconds (it is asked once more at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class Output:
    """What a child process writes to one pipe, read as it comes (select + os.read on the raw
    fd: nothing is stuck in a Python buffer, and `wait` never blocks past its timeout)."""

    def __init__(self, pipe: IO) -> None:
        self.fd = pipe.fileno()
        self.data = b""
        self.closed = False

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    def read(self, timeout: float = 0.0) -> None:
        """Take what is there now (waiting up to `timeout` for the first bytes)."""
        while not self.closed and select.select([self.fd], [], [], timeout)[0]:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.closed = True
            self.data += chunk
            timeout = 0.0

    def wait(self, needle: str, timeout: float, what: str) -> str:
        """Until `needle` is in the output; the output so far. AssertionError naming `what`
        (and showing the output) on timeout or when the process closed the pipe first."""
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                why = "the pipe closed" if self.closed else f"timed out after {timeout:g}s"
                raise AssertionError(f"{why} waiting for {what}; output: {self.text!r}")
            self.read(min(left, 0.2))
        return self.text

    def rest(self, timeout: float) -> str:
        """Everything until the process closes the pipe (it exits), at most `timeout` s."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.read(min(deadline - time.monotonic(), 0.2))
        return self.text
