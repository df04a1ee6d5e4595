"""The serial transport of ``pcl-edge serve --serial PORT``: frames in, router, frames out. Every bad frame is
answered with an ERROR frame (when its request id is readable) and the loop goes on. Nothing kills the loop: any
exception a backend raises becomes an ERROR frame (code 1, internal), and a failure of the loop itself (a port
that errors) is logged and retried after a pause, so the device never goes silent on its serial link."""

from __future__ import annotations

import logging
import threading

from .errors import RuntimeFailure
from .router import Router
from .serial_protocol import (
    ERROR,
    HEALTH,
    INFER,
    LIST,
    RESULT,
    STATUS,
    TASKS,
    Frame,
    FrameError,
    FrameReader,
    encode,
    json_frame,
    tensor_frame,
)
from .service import ServiceCore

log = logging.getLogger(__name__)


def open_port(url: str, baud: int, timeout: float = 0.1):
    try:
        import serial
    except ImportError:
        raise RuntimeError("pyserial is not installed: pip install 'pcl-edge[serial]'") from None
    return serial.serial_for_url(url, baudrate=baud, timeout=timeout)


class SerialServer:
    """The serial transport over the service core (a ``Router`` is wrapped in one): frames in, core calls, frames
    out."""

    def __init__(self, router: Router | ServiceCore, port, frame_timeout: float = 2.0) -> None:
        self.core = router if isinstance(router, ServiceCore) else ServiceCore(router)
        self.router, self.port = self.core.router, port
        self.reader = FrameReader(port, frame_timeout)
        self._stop = threading.Event()
        self.handled = self.errors = 0

    def answer(self, frame: Frame) -> Frame:
        try:
            if frame.type == INFER:
                x = frame.array()
                task = self.core.task(frame.task_id)
                answer = self.core.infer(task["name"], [(task["input"]["name"], x)])
                return tensor_frame(RESULT, frame.request_id, frame.task_id, answer.outputs[0][2])
            if frame.type == LIST:
                return json_frame(TASKS, frame.request_id, [
                    {"id": t["id"], "name": t["name"], "classes": t["class_names"], "input": t["input"]["shape"]}
                    for t in self.router.tasks()])
            if frame.type == HEALTH:
                return json_frame(STATUS, frame.request_id, {"ready": self.core.ready(),
                                                             "bundle_version": self.router.version.bundle_version})
            raise FrameError(f"frame type {frame.type} is not a request", frame.request_id)
        except (RuntimeFailure, FrameError) as exc:
            code = getattr(exc, "code", 2)
            return json_frame(ERROR, frame.request_id, {"code": code, "error": str(exc)}, frame.task_id)
        except Exception as exc:  # noqa: BLE001 - a backend's own failure is an answer, never the end of the loop
            log.exception("serial request %s on task %s failed", frame.request_id, frame.task_id)
            return json_frame(ERROR, frame.request_id, {"code": RuntimeFailure.code,
                                                        "error": f"internal error: {type(exc).__name__}: {exc}"},
                              frame.task_id)

    def serve_once(self, idle_timeout: float = 0.5) -> bool:
        """Handle at most one frame; False when nothing arrived."""
        try:
            frame = self.reader.read(idle_timeout)
        except FrameError as exc:
            self.errors += 1
            if exc.request_id is not None:
                self.port.write(encode(json_frame(ERROR, exc.request_id, {"code": 2, "error": str(exc)})))
            return True
        if frame is None:
            return False
        out = self.answer(frame)
        self.errors += out.type == ERROR
        self.handled += 1
        self.port.write(encode(out))
        return True

    def serve_forever(self, retry_s: float = 1.0) -> None:
        while not self._stop.is_set():
            try:
                self.serve_once()
            except Exception:  # noqa: BLE001 - e.g. the port errored: log, pause, go on serving
                self.errors += 1
                log.exception("serial transport error; retrying in %.1f s", retry_s)
                self._stop.wait(retry_s)

    def stop(self) -> None:
        self._stop.set()
