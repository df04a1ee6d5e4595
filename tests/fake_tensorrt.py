"""A stand-in for the ``tensorrt`` module with the TensorRT 10 (or 8.6) Python API surface that pcl-edge uses.
It records every call, so tests check the builder's logic (order, flags, shapes, caches) without a GPU."""

from __future__ import annotations

import types


def make_fake_tensorrt(version: str = "10.3.0", parse_ok: bool = True, build_ok: bool = True):
    calls: list[tuple] = []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = calls

    class Logger:
        WARNING = "WARNING"

        def __init__(self, level):
            calls.append(("Logger", level))

    class _Enum:
        def __init__(self, **members):
            self.__dict__.update(members)

    trt.Logger = Logger
    trt.BuilderFlag = _Enum(FP16="FP16", INT8="INT8")
    trt.MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")
    trt.NetworkDefinitionCreationFlag = _Enum(EXPLICIT_BATCH=0)

    class TimingCache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self):
            return self.data + b"+"

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.cache, self.int8_calibrator = [], [], None, None

        def set_memory_pool_limit(self, pool, n):
            calls.append(("set_memory_pool_limit", pool, n))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))
            self.flags.append(flag)

        def add_optimization_profile(self, p):
            calls.append(("add_optimization_profile", p.shapes))
            self.profiles.append(p)

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return object()

        def create_builder_config(self):
            calls.append(("create_builder_config",))
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network", tuple(config.flags)))
            if config.int8_calibrator is not None:  # the real builder drives the calibrator like this
                cal = config.int8_calibrator
                if cal.read_calibration_cache() is None:
                    while cal.get_batch(["input"]) is not None:
                        calls.append(("calibration_batch",))
                    cal.write_calibration_cache(b"scales")
            return b"PLAN:" + repr(sorted(config.flags)).encode() if build_ok else None

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 1

        def parse(self, data):
            calls.append(("parse", len(data)))
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Conv): unsupported attribute"

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass

    class Context:
        def __init__(self):
            self.shapes, self.addresses = {}, {}

        def set_input_shape(self, name, shape):
            calls.append(("set_input_shape", name, tuple(shape)))
            self.shapes[name] = tuple(shape)

        def get_tensor_shape(self, name):
            return self.shapes.get(name, (1, 2))

        def set_tensor_address(self, name, ptr):
            calls.append(("set_tensor_address", name, ptr))
            self.addresses[name] = ptr

        def execute_async_v3(self, stream):
            calls.append(("execute_async_v3", stream))
            return True

    class Engine:
        num_io_tensors = 2
        device_memory_size = 4096

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            calls.append(("deserialize_cuda_engine", bytes(plan)[:5]))
            return Engine()

    trt.Builder, trt.OnnxParser, trt.IInt8EntropyCalibrator2 = Builder, OnnxParser, IInt8EntropyCalibrator2
    trt.Runtime = Runtime
    return trt


class FakeCuda:
    """Stands in for pcl_edge._cuda.Cuda: hands out fake pointers and a fixed event time."""

    def __init__(self, ms: float = 0.25):
        self.ms, self.live, self.next, self.calls = ms, set(), 0x1000, []

    def malloc(self, nbytes):
        self.next += 0x100
        self.live.add(self.next)
        self.calls.append(("malloc", nbytes))
        return self.next

    def free(self, ptr):
        self.live.remove(ptr)

    def upload(self, ptr, host):
        self.calls.append(("upload", ptr, host.shape))

    def download(self, host, ptr):
        host[...] = 0.5  # what the "GPU" computed
        self.calls.append(("download", ptr, host.shape))

    def stream(self):
        return "stream0"

    def sync(self, stream):
        self.calls.append(("sync", stream))

    def event(self):
        return object()

    def record(self, event, stream):
        self.calls.append(("record", stream))

    def elapsed_ms(self, start, end):
        return self.ms
