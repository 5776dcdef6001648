import msgpack
import pytest

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
