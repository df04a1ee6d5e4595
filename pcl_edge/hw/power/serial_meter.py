"""An external USB power meter that prints readings as text lines over a serial port (pyserial), e.g.
``5.123V 0.456A`` or ``V=5.12,I=0.46``. The line format is a regular expression with named groups ``V`` and ``A``
(or ``W``), so any meter or logging multimeter with a text output works without code. Tested with pyserial's
``loop://`` URL; no hardware needed."""

from __future__ import annotations

import re

from . import POWER_READERS, PowerReader, PowerReaderError

DEFAULT_PATTERN = r"(?P<V>\d+(?:\.\d+)?)\s*V\W+(?P<A>\d+(?:\.\d+)?)\s*A"


@POWER_READERS.register("serial-meter")
class SerialMeterReader(PowerReader):
    source = "usb-serial-meter"

    def __init__(self, port: str, baud: int = 115200, pattern: str = DEFAULT_PATTERN, timeout_s: float = 1.0,
                 interval_s: float = 0.0, serial_module=None) -> None:
        super().__init__(interval_s)
        if serial_module is None:
            try:
                import serial as serial_module
            except ImportError:
                raise PowerReaderError("pyserial is not installed: pip install 'pcl-edge[serial]'") from None
        self.regex = re.compile(pattern)
        if not ({"V", "A"} <= set(self.regex.groupindex) or "W" in self.regex.groupindex):
            raise PowerReaderError("the line pattern needs named groups V and A, or W")
        try:
            self.port = serial_module.serial_for_url(port, baudrate=baud, timeout=timeout_s)
        except (serial_module.SerialException, ValueError) as exc:
            raise PowerReaderError(f"cannot open power meter port {port}: {exc}") from None

    def parse(self, line: str) -> float | None:
        m = self.regex.search(line)
        if m is None:
            return None
        g = m.groupdict()
        return float(g["W"]) if g.get("W") else float(g["V"]) * float(g["A"])

    def sample(self) -> float:
        for _ in range(16):  # bounded: skip garbage lines, then give up for this sample
            raw = self.port.readline()
            if not raw:
                raise PowerReaderError("power meter sent nothing within the timeout")
            watts = self.parse(raw.decode(errors="replace"))
            if watts is not None:
                return watts
        raise PowerReaderError("power meter lines do not match the expected format")
