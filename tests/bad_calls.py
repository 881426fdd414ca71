"""The row type and the check shared by the bad-input tables (tests/test_bad_inputs.py, the
layers and files; tests/test_call_boundary.py, constructors and call arguments)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from nn_jax.errors import NNJaxError


@dataclasses.dataclass(frozen=True)
class Bad:
    """A wrong call, the error it must raise and fragments its message must contain."""

    id: str
    call: Callable[[], Any]
    error: type[Exception]
    says: tuple[str, ...]


def assert_named_error(row: Bad) -> None:
    """``row.call()`` raises ``row.error``, an ``NNJaxError`` whose message holds ``row.says``."""
    with pytest.raises(row.error) as info:
        row.call()
    assert isinstance(info.value, NNJaxError), f"{type(info.value).__name__} is not NNJaxError"
    message = str(info.value)
    missing = [s for s in row.says if s not in message]
    assert not missing, f"message lacks {missing}: {message}"
