"""The error tree of m42d/errors.py: one root, single inheritance, wire codes."""

from __future__ import annotations

import importlib
import pkgutil

import m42d
from m42d.errors import M42Error, RemoteProtocolError
from m42d.wire import ErrorCode, error_code_for


def _all_error_classes() -> list[type[M42Error]]:
    # Import every module so subclasses defined anywhere in the tree are seen.
    for info in pkgutil.walk_packages(m42d.__path__, "m42d."):
        if info.name.startswith("m42d.web"):
            continue
        importlib.import_module(info.name)
    seen: list[type[M42Error]] = []
    todo: list[type[M42Error]] = [M42Error]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def test_every_error_has_one_base_and_no_builtin_mixins() -> None:
    classes = _all_error_classes()
    assert len(classes) > 20  # the walk did find the tree
    for cls in classes:
        if cls is M42Error:
            continue
        assert len(cls.__bases__) == 1, f"{cls.__qualname__} has bases {cls.__bases__}"
        # Only M42Error touches Exception: no ValueError/OSError mixed in further down.
        assert all(base is Exception or issubclass(base, M42Error) for base in cls.__mro__[1:-2]), (
            cls.__mro__
        )


def test_every_relay_visible_error_carries_a_real_wire_code() -> None:
    remote = [c for c in _all_error_classes() if issubclass(c, RemoteProtocolError)]
    assert len(remote) > 8
    for cls in remote:
        assert cls.wire_code in set(ErrorCode), cls
        assert error_code_for(cls("x")) == ErrorCode(cls.wire_code)


def test_wire_codes_say_what_went_wrong() -> None:
    from m42d.ticket import BadSeatToken, TicketExpired, UnknownTicketKey
    from m42d.wire import FrameTooLargeError

    assert error_code_for(FrameTooLargeError("x")) is ErrorCode.TOO_LARGE
    assert error_code_for(BadSeatToken("x")) is ErrorCode.BAD_TOKEN
    assert error_code_for(TicketExpired("x")) is ErrorCode.EXPIRED
    assert error_code_for(UnknownTicketKey("x")) is ErrorCode.UNKNOWN_ROOM
