"""The serial transport: frame codec over pyserial's loop://, and server <-> client end to end over a pty pair.
No hardware needed."""

import os
import select
import threading
import time
import tty

import numpy as np
import pytest

from pcl_edge.runtime.serial_protocol import (
    ERROR,
    INFER,
    Frame,
    FrameError,
    FrameReader,
    encode,
    json_frame,
    tensor_frame,
)

serial = pytest.importorskip("serial", reason="pyserial is not installed")


def loop(timeout=0.05):
    return serial.serial_for_url("loop://", timeout=timeout)


def test_frames_round_trip_over_loop():
    port = loop()
    x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    port.write(encode(tensor_frame(INFER, 7, 3, x)) + encode(json_frame(ERROR, 8, {"code": 3, "error": "no"})))
    reader = FrameReader(port)
    f = reader.read()
    assert (f.type, f.request_id, f.task_id, f.shape) == (INFER, 7, 3, (1, 1, 8, 8))
    np.testing.assert_array_equal(f.array(), x)
    assert reader.read().json() == {"code": 3, "error": "no"}
    assert reader.read(idle_timeout=0.1) is None  # nothing more: a clean timeout, not an error


def test_garbage_between_frames_is_skipped():
    port = loop()
    frame = encode(Frame(INFER, 1, 2, 2, (2,), b"\x01\x02"))
    port.write(b"\x00\xa5\xffnoise\xa5" + frame + b"\xa5" + frame)
    reader = FrameReader(port)
    assert reader.read().request_id == 1 and reader.read().request_id == 1
    assert reader.skipped == 10  # 9 bytes of noise before the first frame, 1 stray byte between the two


def test_corrupted_truncated_and_impossible_frames_are_refused_with_their_request_id():
    port = loop()
    good = bytearray(encode(tensor_frame(INFER, 42, 1, np.zeros((1, 2), np.float32))))
    bad = bytearray(good)
    bad[-6] ^= 0x10  # a flipped payload bit
    port.write(bytes(bad))
    reader = FrameReader(port, frame_timeout=0.2)
    with pytest.raises(FrameError, match="CRC") as e:
        reader.read()
    assert e.value.request_id == 42
    port.write(bytes(good[:15]))  # truncated: the rest never comes
    with pytest.raises(FrameError, match="truncated|did not arrive"):
        reader.read()
    impossible = bytearray(good)
    impossible[2] = 9  # version 9
    port.write(bytes(impossible) + bytes(good))
    with pytest.raises(FrameError, match="impossible header"):
        reader.read()
    assert reader.read().request_id == 42  # and the stream re-synchronises on the next frame


def test_random_bytes_never_crash_the_reader():
    rng = np.random.default_rng(0)
    port = loop(timeout=0.001)
    reader = FrameReader(port, frame_timeout=0.01)
    answered = 0
    for _ in range(300):
        port.write(bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8)) +
                   (b"\xa5\x5a\x01" if rng.random() < 0.3 else b""))
        try:
            reader.read(idle_timeout=0.01)
        except FrameError:
            answered += 1
    assert answered > 0  # some of the random magics were caught as bad frames, none crashed the reader


class FdPort:
    """The master side of a pty as a minimal pyserial-like port."""

    def __init__(self, fd, timeout=0.05):
        self.fd, self.timeout, self.in_waiting = fd, timeout, 0

    def read(self, n):
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        return os.read(self.fd, n) if ready else b""

    def write(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]


def test_end_to_end_over_a_pty(bundles):  # noqa: F811
    from pcl_edge.runtime import Router
    from pcl_edge.runtime.client import SerialClient
    from pcl_edge.runtime.serial_server import SerialServer, open_port

    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    router = Router(bundles / "v1", backend="ort")
    server = SerialServer(router, open_port(os.ttyname(slave), 115200, timeout=0.05))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = SerialClient(FdPort(master), timeout=10)
        assert client.health()["ready"] is True
        assert [t["name"] for t in client.tasks()] == [f"task_{i:02d}" for i in range(1, 6)]
        x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
        np.testing.assert_array_equal(client.infer(2, x), router.infer(2, x).logits)
        img = np.random.default_rng(1).integers(0, 256, (1, 8, 8, 1), dtype=np.uint8)
        np.testing.assert_array_equal(client.infer(4, img), router.infer(4, img, preprocess=True).logits)
        from pcl_edge.runtime import RuntimeFailure

        with pytest.raises(RuntimeFailure, match="unknown task 9"):
            client.infer(9, x)
        with pytest.raises(RuntimeFailure, match=r"shape \[N, 1, 8, 8\]"):
            client.infer(1, np.zeros((1, 3, 8, 8), np.float32))
        FdPort(master).write(b"garbage" + encode(tensor_frame(INFER, 99, 1, x))[:-1] + b"\x00")  # bad CRC
        reply = client.reader.read(10)
        assert reply.type == ERROR and reply.request_id == 99 and "CRC" in reply.json()["error"]
        assert client.infer(1, x).shape == (3, 2)  # still serving
    finally:
        server.stop()
        thread.join(timeout=5)
        os.close(master)
        os.close(slave)


def test_noise_in_the_length_field_costs_one_frame_not_the_frames_after_it():
    """A corrupted length (here: close to the 4 MiB limit) on a busy line: the header CRC drops that frame at once,
    and the four frames the host sent right after it are all answered."""
    import struct

    from pcl_edge.runtime.serial_protocol import MAX_PAYLOAD

    port = loop(timeout=0.01)
    frames = [encode(tensor_frame(INFER, i, 1, np.zeros((1, 2), np.float32))) for i in range(1, 6)]
    bad = bytearray(frames[0])
    at = 2 + 10 + 4 * 2  # magic, fixed header, a 2-d shape: the length field
    bad[at:at + 4] = struct.pack("<I", MAX_PAYLOAD - 1)
    port.write(bytes(bad) + b"".join(frames[1:]))
    reader = FrameReader(port, frame_timeout=30)  # a long deadline: only the header's own check can help
    t0 = time.monotonic()
    with pytest.raises(FrameError, match="header CRC") as e:
        reader.read()
    assert e.value.request_id is None  # a request id from a corrupted header is not trusted
    assert [reader.read(0.5).request_id for _ in range(4)] == [2, 3, 4, 5] and time.monotonic() - t0 < 5


def test_the_frame_deadline_holds_while_the_line_stays_busy():
    """A frame that announces a large payload, then only noise, without pause: dropped at its deadline."""
    import threading

    port = loop(timeout=0.01)
    big = bytearray(encode(tensor_frame(INFER, 9, 1, np.zeros((1, 1 << 16), np.float32))))
    port.write(bytes(big[:64]))  # the header (its CRC holds) and the start of the payload
    stop = threading.Event()

    def chatter():
        while not stop.is_set():
            port.write(b"\x00" * 32)
            time.sleep(0.002)

    threading.Thread(target=chatter, daemon=True).start()
    reader = FrameReader(port, frame_timeout=0.3)
    t0 = time.monotonic()
    try:
        with pytest.raises(FrameError, match="truncated"):
            reader.read()
    finally:
        stop.set()
    assert time.monotonic() - t0 < 2
