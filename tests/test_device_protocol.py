"""Frames of the device link: exact layout, and recovery from garbage, damage and dropped bytes."""

import struct
import zlib

import pytest

from firmware_bridge import protocol as p


def decode_all(data: bytes, max_payload: int = p.DEFAULT_MAX_PAYLOAD, step: int | None = None):
    decoder = p.Decoder(max_payload)
    items = []
    for i in range(0, len(data), step or len(data) or 1):
        decoder.feed(data[i : i + (step or len(data))])
        items += list(decoder.items())
    return items, decoder


def test_layout_is_the_documented_one():
    frame = p.encode(p.PUT_DATA, 0x01020304, b"xyz")
    assert frame[:2] == b"EP" and frame[2] == p.VERSION == 2 and frame[3] == 0x11
    assert struct.unpack(">II", frame[4:12]) == (0x01020304, 3)
    assert int.from_bytes(frame[12:16], "big") == zlib.crc32(frame[:12])
    assert frame[16:19] == b"xyz"
    assert int.from_bytes(frame[19:], "big") == zlib.crc32(frame[:19])
    assert len(frame) == p.OVERHEAD + 3


@pytest.mark.parametrize("step", [None, 1, 7])
def test_frames_round_trip_whatever_the_read_sizes(step):
    frames = [
        p.encode(p.PING, 1),
        p.encode_json(p.OK, 2, {"a": [1, "é"]}),
        p.encode(p.DATA, 3, bytes(range(256)) * 40),
    ]
    items, decoder = decode_all(b"".join(frames), step=step)
    assert [(i.type, i.request_id) for i in items] == [(p.PING, 1), (p.OK, 2), (p.DATA, 3)]
    assert items[1].json() == {"a": [1, "é"]} and items[2].payload == bytes(range(256)) * 40
    assert decoder.pending() == 0 and decoder.skipped == 0


def test_garbage_before_and_between_frames_is_skipped():
    data = b"login banner\r\nEPEP\x00" + p.encode(p.PING, 5) + b"E" + p.encode(p.PING, 6)
    items, decoder = decode_all(data)
    assert [i.request_id for i in items] == [5, 6]
    assert decoder.skipped == len(data) - 2 * p.OVERHEAD


def test_a_flipped_payload_byte_is_reported_and_the_next_frame_survives():
    first = bytearray(p.encode(p.PUT_DATA, 7, b"a" * 100))
    first[p.HEADER_SIZE + 50] ^= 0xFF
    items, _ = decode_all(bytes(first) + p.encode(p.PING, 8))
    assert isinstance(items[0], p.Damaged) and (items[0].request_id, items[0].reason) == (7, "crc")
    assert isinstance(items[1], p.Frame) and items[1].request_id == 8


def test_a_dropped_byte_costs_its_frame_only():
    first = p.encode(p.PUT_DATA, 7, b"b" * 100)
    damaged = first[:40] + first[41:]  # the frame now swallows the next frame's first byte
    items, _ = decode_all(damaged + p.encode(p.PING, 8) + p.encode(p.PING, 9))
    frames = [i.request_id for i in items if isinstance(i, p.Frame)]
    assert any(isinstance(i, p.Damaged) and i.request_id == 7 for i in items)
    assert frames == [8, 9]


def test_a_damaged_header_is_skipped_without_waiting_for_its_length():
    bad = bytearray(p.encode(p.PING, 1))
    bad[9] ^= 0x40  # the length field: now 4 MiB announced
    items, decoder = decode_all(bytes(bad) + p.encode(p.PING, 2))
    assert [i.request_id for i in items] == [2] and decoder.pending() == 0


def test_oversize_and_unknown_version_frames_are_refused_before_buffering():
    huge = p.HEADER.pack(p.MAGIC, 1, p.PUT_DATA, 11, 1 << 30)
    huge += zlib.crc32(huge).to_bytes(4, "big")
    future = p.encode(p.HELLO, 12, b"{}", version=9)
    items, _ = decode_all(huge + b"\0" * 1000 + future + p.encode(p.PING, 13), max_payload=4096)
    assert [(type(i).__name__, i.request_id) for i in items] == [
        ("Damaged", 11),
        ("Damaged", 12),
        ("Frame", 13),
    ]
    assert items[0].reason == "too_large" and items[1].reason == "version"


def test_json_payloads_must_be_objects():
    with pytest.raises(p.ProtocolError) as e:
        p.Frame(p.RUN, 1, b"[1, 2]").json()
    assert e.value.code == "bad_request"
    with pytest.raises(p.ProtocolError):
        p.Frame(p.RUN, 1, b"\xff{").json()
