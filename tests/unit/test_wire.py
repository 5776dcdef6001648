import datetime
import decimal
import math
import re
import uuid
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.pool.interpreter import wire


def test_round_trips() -> None:
    for message in (
        wire.Request(7, "calculate", {"expression": "1+1", "nested": [1, {"a": None}]}),
        wire.Reply(7, True, {"result": 2}),
        wire.Reply(8, False, {"type": "InvalidArguments", "message": "no"}),
        wire.Ready(123, {"ping": {"read_only": True, "idempotent": True}}, "3.11.7"),
    ):
        payload = message.encode()
        assert wire.decode(payload) == message
        framed = wire.frame(payload)
        assert wire.HEADER.unpack(framed[:4])[0] == len(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never-used msgpack byte
        msgpack.packb([9, 1, 2]),  # unknown kind
        msgpack.packb([0, 1, 5, {}]),  # command not a str
        msgpack.packb([1, 1]),  # too short
        msgpack.packb(42),  # not a sequence
    ],
)
def test_bad_frames_are_decode_errors(payload: bytes) -> None:
    with pytest.raises(wire.DecodeError):
        wire.decode(payload)


# --------------------------------------------------------------- values on the wire

BIG_INTS = [2**64, -(2**63) - 1, 2**63, -(2**63), 10**100, -(10**100), 2**4095, -(2**4096)]


@pytest.mark.parametrize("number", BIG_INTS)
def test_integers_of_any_size_round_trip_exactly(number: int) -> None:
    args = {"n": number, "nested": [number, {"k": -number}]}
    framed = wire.framed_request(1, "echo", args)
    rid, command, decoded, session, transient = wire.decode_request(framed[4:])
    assert (rid, command, decoded, session, transient) == (1, "echo", args, None, False)
    assert type(decoded["n"]) is int
    assert wire.decode_reply(wire.framed_reply(1, True, {"result": number})[4:]) == (
        1, True, {"result": number},
    )  # fmt: skip


def test_tuples_cross_as_lists_and_scalar_keys_as_themselves() -> None:
    args = {"t": (1, (2, 3)), "keys": {1: "int", None: "none", 1.5: "float", b"b": "bytes"}}
    _, _, decoded, _, _ = wire.decode_request(wire.framed_request(1, "echo", args)[4:])
    assert decoded == {"t": [1, [2, 3]], "keys": args["keys"]}


def test_nan_and_infinities_cross_bit_for_bit() -> None:
    args = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf}
    _, _, decoded, _, _ = wire.decode_request(wire.framed_request(1, "echo", args)[4:])
    assert math.isnan(decoded["nan"]) and decoded["inf"] == math.inf and decoded["ninf"] < 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"when": datetime.date(2024, 1, 2)}, "args['when']: date is not JSON-able"),
        ({"a": [1, {"at": datetime.datetime(2024, 1, 2)}]},
         "args['a'][1]['at']: datetime is not JSON-able"),
        ({"t": datetime.time(1, 2)}, "args['t']: time is not JSON-able"),
        ({"price": decimal.Decimal("1.5")}, "args['price']: Decimal is not JSON-able"),
        ({"id": uuid.UUID(int=7)}, "args['id']: UUID is not JSON-able"),
        ({"s": {1, 2}}, "args['s']: set is not JSON-able"),
        ({"o": object()}, "args['o']: object is not JSON-able"),
        ({"k": {frozenset(): 1}}, "args['k']: key frozenset() is a frozenset"),
        ({"text": "ok \ud800"}, "args['text']: string is not valid Unicode"),
        ({"\udc80": 1}, "args key: string is not valid Unicode"),
    ],
)  # fmt: skip
def test_values_that_cannot_cross_name_their_path(args: dict[str, Any], message: str) -> None:
    with pytest.raises(wire.EncodeError) as caught:
        wire.framed_request(1, "echo", args)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)  # what the pool maps to InvalidArguments
    with pytest.raises(wire.EncodeError, match=re.escape(message)):
        wire.encode_request_body("echo", args)


def _nested(depth: int, leaf: Any = "leaf") -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_beyond_the_limit_is_named() -> None:
    with pytest.raises(wire.EncodeError, match=r"args\['x'\](\[0\])+: nested deeper than 1000"):
        wire.framed_request(1, "echo", {"x": _nested(5000)})
    deep = {"x": _nested(900)}  # within the limit: crosses intact
    assert wire.decode_request(wire.framed_request(1, "echo", deep)[4:])[2] == deep


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"k": {(1, 2): "tuple key"}}, "a dict key is a tuple or list"),
        ({"x": _nested(1022, [])}, "nested deeper than 1000 levels"),  # packs, won't unpack
        ({"x": msgpack.ExtType(9, b"")}, "unknown msgpack extension type 9"),
    ],
)
def test_well_framed_but_undecodable_request_keeps_the_stream(
    args: dict[str, Any], reason: str
) -> None:
    framed = wire.framed_request(41, "echo", args, session="s1")
    with pytest.raises(wire.UndecodableRequest) as caught:
        wire.decode_request(framed[4:])
    assert (caught.value.id, caught.value.command) == (41, "echo")
    assert reason in caught.value.reason


def test_undecodable_result_is_an_error_reply_not_a_broken_stream() -> None:
    rid, ok, value = wire.decode_reply(wire.framed_reply(5, True, {(1, 2): "x"})[4:])
    assert (rid, ok, value["type"]) == (5, False, "CommandFailed")
    assert "a dict key is a tuple or list" in value["message"]
    with pytest.raises(wire.EncodeError, match=r"result\['when'\]: date is not JSON-able"):
        wire.framed_reply(5, True, {"when": datetime.date(2024, 1, 2)})
    rid, ok, value = wire.decode_reply(wire.framed_reply(6, True, _nested(1023, []))[4:])
    assert (rid, ok, value["type"]) == (6, False, "CommandFailed")
    for corrupted in (b"\x94\x01\xc1", wire.framed_reply(7, True, 1)[4:] + b"\x00"):
        with pytest.raises(wire.DecodeError):
            wire.decode_reply(corrupted)  # a corrupted stream stays fatal


# ------------------------------------------------------------------ request scope


def test_request_carries_its_scope() -> None:
    framed = wire.framed_request(3, "list_programs", {}, session="sess-A", transient=True)
    assert wire.decode_request(framed[4:]) == (3, "list_programs", {}, "sess-A", True)
    message = wire.Request(3, "ping", {}, "sess-A", True)
    assert wire.decode(message.encode()) == message
    legacy = msgpack.packb([0, 9, "ping", {}])  # no scope: an older sender (benchmarks)
    assert wire.decode_request(legacy) == (9, "ping", {}, None, False)
    assert wire.decode(legacy) == wire.Request(9, "ping", {})


def test_body_encoded_before_leasing_frames_identically() -> None:
    args = {"n": 2**70, "s": "x"}
    body = wire.encode_request_body("echo", args, session="s", transient=True)
    assert wire.frame_request(12, body) == wire.framed_request(
        12, "echo", args, session="s", transient=True
    )


@pytest.mark.parametrize("session", [7, b"s", ["s"]])
def test_a_session_must_be_a_string(session: Any) -> None:
    with pytest.raises(wire.EncodeError, match="session: must be a string or None"):
        wire.framed_request(1, "ping", {}, session=session)
    with pytest.raises(wire.DecodeError):
        wire.decode_request(msgpack.packb([0, 1, "ping", {}, 7, False]))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=50, deadline=None)
@given(value=json_values, big=st.integers(min_value=-(2**300), max_value=2**300))
def test_json_values_round_trip(value: Any, big: int) -> None:
    args = {"value": value, "big": big}
    assert wire.decode_request(wire.framed_request(1, "echo", args)[4:])[2] == args
    assert wire.decode_reply(wire.framed_reply(1, True, args)[4:]) == (1, True, args)


# ------------------------------------------------- the integer limit (review item 3)

#: The largest magnitude that crosses: 4300 nines (Python's int/str conversion limit).
LARGEST = 10**4300 - 1


@pytest.mark.parametrize(
    "number", [LARGEST, -LARGEST, 10**4299, -(10**4299)], ids=["max", "-max", "1e4299", "-1e4299"]
)
def test_integers_of_4300_digits_cross_exactly_both_ways(number: int) -> None:
    args = {"n": number, "deep": [{"k": number}]}
    assert wire.decode_request(wire.framed_request(1, "echo", args)[4:])[2] == args
    assert wire.decode_reply(wire.framed_reply(1, True, args)[4:]) == (1, True, args)


TOO_LONG = [10**4300, -(10**4300), 10**5000, -(3**10000)]


@pytest.mark.parametrize("number", TOO_LONG, ids=["1e4300", "-1e4300", "1e5000", "-3**10000"])
def test_an_integer_of_more_than_4300_digits_is_refused_by_path(number: int) -> None:
    expected = r"args\['a'\]\[1\]\['n'\]: integer of more than 4300 digits"
    with pytest.raises(wire.EncodeError, match=expected):
        wire.framed_request(1, "echo", {"a": [0, {"n": number}]})
    with pytest.raises(wire.EncodeError, match=expected):
        wire.encode_request_body("echo", {"a": [0, {"n": number}]})
    with pytest.raises(wire.EncodeError, match=r"result\['r'\]: integer of more than 4300"):
        wire.framed_reply(1, True, {"r": number})
    with pytest.raises(wire.EncodeError, match=r"args\['k'\] key: integer of more than 4300"):
        wire.Request(1, "echo", {"k": {number: 1}}).encode()


def _hostile_big_int(number: int, length: int) -> msgpack.ExtType:
    """What a sender that skips the encoder's check could put on the pipe."""
    return msgpack.ExtType(1, number.to_bytes(length, "big", signed=True))


@pytest.mark.parametrize(
    "ext",
    [
        _hostile_big_int(10**4300, 1786),  # one digit too many, in as few bytes as it takes
        _hostile_big_int(-(10**4300), 1786),
        _hostile_big_int(1, 100_000),  # a small number, padded: refused by its length alone
    ],
    ids=["1e4300", "-1e4300", "padded"],
)
def test_a_too_long_integer_is_refused_when_decoded_too(ext: msgpack.ExtType) -> None:
    request = msgpack.packb([0, 9, "echo", {"n": ext}, None, False])
    with pytest.raises(wire.UndecodableRequest, match="integer of more than 4300 digits") as bad:
        wire.decode_request(request)
    assert (bad.value.id, bad.value.command) == (9, "echo")
    rid, ok, error = wire.decode_reply(msgpack.packb([1, 9, True, {"n": ext}]))
    assert (rid, ok, error["type"]) == (9, False, "CommandFailed")
    assert "integer of more than 4300 digits" in error["message"]


@settings(max_examples=40, deadline=None)
@given(
    digits=st.integers(min_value=4290, max_value=4310),
    tail=st.integers(min_value=0, max_value=10**20),
    negative=st.booleans(),
)
def test_an_integer_crosses_exactly_if_and_only_if_it_has_at_most_4300_digits(
    digits: int, tail: int, negative: bool
) -> None:
    number = (10 ** (digits - 1) + tail) * (-1 if negative else 1)  # exactly `digits` digits
    if digits <= 4300:
        assert wire.decode_request(wire.framed_request(1, "echo", {"n": number})[4:])[2] == {
            "n": number
        }
        assert wire.decode_reply(wire.framed_reply(1, True, number)[4:]) == (1, True, number)
    else:
        with pytest.raises(wire.EncodeError, match="integer of more than 4300 digits"):
            wire.framed_request(1, "echo", {"n": number})
        with pytest.raises(wire.EncodeError, match="integer of more than 4300 digits"):
            wire.framed_reply(1, True, number)


# --------------------------------------------------------------- the handshake, packed ahead

_COMMANDS = st.dictionaries(
    st.text(max_size=30),
    st.fixed_dictionaries({"read_only": st.booleans(), "idempotent": st.booleans()}),
    max_size=20,
)


@given(pid=st.integers(0, 2**63 - 1), commands=_COMMANDS, python=st.text(max_size=12))
def test_the_handshake_packed_ahead_is_the_handshake(
    pid: int, commands: dict[str, dict[str, bool]], python: str
) -> None:
    encode = wire.Ready.encoder(commands, python)  # in the template, before the fork
    payload = encode(pid)  # in the interpreter: only its pid is packed
    assert payload == msgpack.packb((2, pid, commands, python), use_bin_type=True)
    assert wire.decode(payload) == wire.Ready(pid, commands, python)
    assert wire.Ready(pid, commands, python).encode() == payload
