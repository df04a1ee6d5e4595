"""``tegrastats`` on a Jetson: each line reports rails as ``NAME current_mW/average_mW`` (Orin: ``VDD_IN``,
``VDD_CPU_GPU_CV``, ``VDD_SOC``; Xavier: ``VDD_IN`` or ``POM_5V_IN``). The reader runs tegrastats and keeps the
newest value of one rail."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading

from . import POWER_READERS, PowerReader, PowerReaderError

_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)mW/(\d+)mW")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")


def parse_tegrastats_line(line: str) -> dict[str, float]:
    """Rail -> current power in W, from one tegrastats line."""
    return {name: int(now) / 1000.0 for name, now, _ in _RAIL.findall(line)}


def parse_tegrastats_temperatures(line: str) -> dict[str, float]:
    """Sensor -> degrees Celsius (``GPU@45.5C``, ``tj@47C``, ...), from one tegrastats line."""
    return {name.lower(): float(value) for name, value in _TEMP.findall(line)}


@POWER_READERS.register("tegrastats")
class TegrastatsReader(PowerReader):
    source = "tegrastats"

    def __init__(self, rail: str = "VDD_IN", interval_s: float = 0.05, executable: str = "tegrastats") -> None:
        super().__init__(interval_s)
        exe = shutil.which(executable)
        if exe is None:
            raise PowerReaderError("tegrastats not found: this reader works on a Jetson (L4T)")
        self.rail, self._latest, self.last_line = rail, None, ""
        self._proc = subprocess.Popen([exe, "--interval", str(max(10, int(interval_s * 1000)))],
                                      stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        for line in self._proc.stdout:  # ends when the process does
            self.last_line = line
            rails = parse_tegrastats_line(line)
            if self.rail in rails:
                self._latest = rails[self.rail]

    def sample(self) -> float:
        if self._latest is None:
            raise PowerReaderError(f"tegrastats has not reported rail {self.rail!r} yet")
        return self._latest

    def stop(self):
        try:
            return super().stop()
        finally:
            self._proc.terminate()
