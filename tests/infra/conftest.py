"""Fixtures for the Pulumi program's tests: infra/ on the import path, a fresh event loop
per test, and mocks that record what the program registers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"
# The program imports its modules by name from its own folder (as the engine runs it, and as
# the dynamic-provider process finds them); the tests do the same.
for folder in (INFRA, INFRA / "policy"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture
def fresh_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """Pulumi's runtime needs a current event loop (Python 3.12+ no longer makes one)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def loop(fresh_loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """`fresh_loop` under the name the authorization and TLS tests drive it by."""
    return fresh_loop
