import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pcl_edge.hw.backends.trtexec import TrtexecBackend, TrtexecError, parse_times
from pcl_edge.hw.power import PowerTrace, create_power_reader, energy_per_inference
from pcl_edge.hw.power.tegrastats import parse_tegrastats_line

DATA = Path(__file__).parent / "data"


def test_trtexec_times_are_parsed():
    # tests/data/trtexec_times.json is written in the format trtexec --exportTimes produces (TensorRT 8.6/10):
    # a count record, then one object per inference. Replace it by a real recording when a device is at hand.
    compute = parse_times(DATA / "trtexec_times.json")
    assert compute.tolist() == [0.221, 0.219, 0.224, 0.219]
    assert parse_times(DATA / "trtexec_times.json", "latencyMs").tolist() == [0.232, 0.23, 0.235, 0.23]
    with pytest.raises(TrtexecError, match="no 'gpuMs'"):
        parse_times(DATA / "trtexec_times.json", "gpuMs")


def test_trtexec_backend_runs_the_tool_and_reads_its_times(tmp_path):
    fake = tmp_path / "trtexec"  # stands in for the binary: checks its arguments, writes the times file
    fake.write_text(f"""#!{sys.executable}
import shutil, sys
args = dict(a.lstrip('-').split('=', 1) for a in sys.argv[1:] if '=' in a)
assert 'onnx' in args and args['iterations'] == '50' and '--fp16' in sys.argv
shutil.copy({str(DATA / 'trtexec_times.json')!r}, args['exportTimes'])
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    b = TrtexecBackend(str(fake), precision="fp16", iterations=50)
    m = b.measure(b"onnx bytes")
    assert m.count == 4 and m.median == pytest.approx(0.22)
    assert "trtexec" in b.settings()["tool"]
    with pytest.raises(TrtexecError, match="not found"):
        TrtexecBackend(str(tmp_path / "missing"))


def test_tegrastats_orin_line():
    line = ("11-21-2026 10:00:00 RAM 2422/7620MB (lfb 1024x4MB) CPU [3%@1510,1%@1510] GR3D_FREQ 0% "
            "cpu@46.5C gpu@45.9C VDD_IN 5072mW/5072mW VDD_CPU_GPU_CV 1044mW/1044mW VDD_SOC 1440mW/1440mW")
    assert parse_tegrastats_line(line) == {"VDD_IN": 5.072, "VDD_CPU_GPU_CV": 1.044, "VDD_SOC": 1.44}


def test_ina3221_sysfs_reader(tmp_path):
    hw = tmp_path / "1-0040" / "hwmon" / "hwmon3"
    hw.mkdir(parents=True)
    (hw / "in1_label").write_text("VDD_IN\n")
    (hw / "in1_input").write_text("5000\n")  # mV
    (hw / "curr1_input").write_text("1200\n")  # mA
    reader = create_power_reader("ina-sysfs", root=tmp_path, interval_s=0.005)
    assert reader.sample() == pytest.approx(6.0)
    reader.start()
    time.sleep(0.05)
    trace = reader.stop()
    assert trace.watts.size >= 2 and np.all(trace.watts == 6.0)
    from pcl_edge.hw.power import PowerReaderError

    with pytest.raises(PowerReaderError, match="no INA3221 rail 'VDD_GPU'"):
        create_power_reader("ina-sysfs", rail="VDD_GPU", root=tmp_path)


def test_usb_meter_over_pyserial_loopback():
    pytest.importorskip("serial")
    reader = create_power_reader("serial-meter", port="loop://", timeout_s=0.2)
    reader.port.write(b"garbage\n5.00V 0.50A\nV=5.1,I=0.2\n")  # loop:// reads back what was written
    assert reader.sample() == pytest.approx(2.5)
    from pcl_edge.hw.power import PowerReaderError

    with pytest.raises(PowerReaderError, match="nothing within the timeout"):
        reader.sample()  # "V=5.1,I=0.2" does not match the default pattern; then the line is empty
    custom = create_power_reader("serial-meter", port="loop://", timeout_s=0.2,
                                 pattern=r"V=(?P<V>[\d.]+),I=(?P<A>[\d.]+)")
    custom.port.write(b"V=5.1,I=0.2\n" * 3)
    custom.start()
    time.sleep(0.05)
    with pytest.raises(PowerReaderError, match="reading failed"):  # the meter falls silent: said, not swallowed
        custom.stop()


def test_energy_per_inference():
    trace = PowerTrace(t=np.array([0.0, 1.0, 2.0]), watts=np.array([5.0, 7.0, 5.0]))
    e = energy_per_inference(trace, inferences=100, idle_w=4.0)
    assert e["j_per_inference"] == pytest.approx(12.0 / 100) and e["dynamic_j_per_inference"] == pytest.approx(0.04)


def test_tegrastats_temperatures_and_the_metrics_gauges():
    """The device's /metrics carry power and temperature where tegrastats runs (issue 23 item 2)."""
    from pcl_edge.hw.power.tegrastats import parse_tegrastats_line, parse_tegrastats_temperatures

    line = ("RAM 2431/7620MB (lfb 2x4MB) CPU [2%@729,0%@729] EMC_FREQ 0% GR3D_FREQ 0% cpu@47.25C soc2@46.5C "
            "GPU@45.906C tj@47.25C VDD_IN 4512mW/4512mW VDD_CPU_GPU_CV 483mW/483mW VDD_SOC 1368mW/1368mW")
    assert parse_tegrastats_temperatures(line)["gpu"] == 45.906 and parse_tegrastats_line(line)["VDD_IN"] == 4.512
