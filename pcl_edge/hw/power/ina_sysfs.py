"""Jetson on-module INA3221 power monitors through hwmon sysfs: ``in{N}_label`` names a rail, ``in{N}_input`` is
its voltage (mV) and ``curr{N}_input`` its current (mA). The rail to read is chosen by label (``VDD_IN`` = the
whole module on Orin)."""

from __future__ import annotations

from pathlib import Path

from . import POWER_READERS, PowerReader, PowerReaderError

DEFAULT_ROOT = Path("/sys/bus/i2c/drivers/ina3221")


def find_rails(root: Path = DEFAULT_ROOT) -> dict[str, tuple[Path, Path]]:
    """label -> (voltage file, current file) for every INA3221 channel under ``root``."""
    rails = {}
    for label_file in sorted(Path(root).glob("*/hwmon/hwmon*/in*_label")):
        n = label_file.name[2:].split("_")[0]
        volt, curr = label_file.with_name(f"in{n}_input"), label_file.with_name(f"curr{n}_input")
        if volt.exists() and curr.exists():
            rails[label_file.read_text().strip()] = (volt, curr)
    return rails


@POWER_READERS.register("ina-sysfs")
class InaSysfsReader(PowerReader):
    source = "ina3221-sysfs"

    def __init__(self, rail: str = "VDD_IN", root: Path | str = DEFAULT_ROOT, interval_s: float = 0.05) -> None:
        super().__init__(interval_s)
        rails = find_rails(Path(root))
        if rail not in rails:
            raise PowerReaderError(f"no INA3221 rail {rail!r} under {root} (found {sorted(rails) or 'none'}); "
                                   "on a Jetson run as a user that can read hwmon")
        self.rail = rail
        self._volt, self._curr = rails[rail]

    def sample(self) -> float:
        return int(self._volt.read_text()) * int(self._curr.read_text()) / 1e6  # mV * mA -> W
