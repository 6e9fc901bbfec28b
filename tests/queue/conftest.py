"""The queue store most queue tests label against: a fresh SQLite file, two votes a post, no gold."""

from __future__ import annotations

import pytest

from .._queue_fixtures import make_store


@pytest.fixture
def store(tmp_path):
    s = make_store(str(tmp_path / "q.sqlite"), overlap=2, gold_rate=0.0)
    yield s
    s.close()
