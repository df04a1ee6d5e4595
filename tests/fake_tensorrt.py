"""A stand-in for the ``tensorrt`` module with the TensorRT 10 (or 8.6) Python API surface that pcl-edge uses.
It records every call, so tests check the builder's logic (order, flags, shapes, caches) without a GPU."""

from __future__ import annotations

import json
import types


def fuse_layers(onnx_bytes: bytes) -> list[str]:
    """Layer names as TensorRT reports fused layers (members joined by " + "), emulating its documented fusions
    on the ONNX graph: Convolution + ReLU, Convolution + ElementWise sum (+ ReLU), ElementWise + ReLU. Written
    against ONNX nodes, independently of pcl_edge.hw.fusion, so tests can check that module against it."""
    import onnx

    nodes = list(onnx.load_from_string(onnx_bytes).graph.node)
    consumers: dict[str, list] = {}
    for n in nodes:
        for i, x in enumerate(n.input):
            consumers.setdefault(x, []).append((n, i))
    taken, layers = set(), []
    for n in nodes:
        if n.name in taken:
            continue
        chain = [n]
        while True:
            last = chain[-1]
            nxt = consumers.get(last.output[0], [])
            if len(nxt) != 1:
                break
            node, slot = nxt[0]
            ops = [c.op_type for c in chain] + [node.op_type]
            ok = ops in (["Conv", "Relu"], ["Add", "Relu"], ["Conv", "Add", "Relu"]) or (ops == ["Conv", "Add"]
                                                                                         and slot == 0)
            if not ok:
                break
            chain.append(node)
        taken.update(c.name for c in chain)
        layers.append(" + ".join(c.name for c in chain))
    return layers


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
    trt.BuilderFlag = _Enum(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK")
    trt.DeviceType = _Enum(GPU="GPU", DLA="DLA")
    trt.MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")
    trt.NetworkDefinitionCreationFlag = _Enum(EXPLICIT_BATCH=0)
    trt.ProfilingVerbosity = _Enum(DETAILED="DETAILED", LAYER_NAMES_ONLY="LAYER_NAMES_ONLY", NONE="NONE")
    trt.LayerInformationFormat = _Enum(JSON="JSON", ONELINE="ONELINE")

    class Network:
        def __init__(self):
            self.onnx = b""

    class TimingCache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self):
            return self.data + b"+"

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.cache, self.int8_calibrator = [], [], None, None
            self.profiling_verbosity = "LAYER_NAMES_ONLY"

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
            return Network()

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
            if not build_ok:
                return None
            plan = b"PLAN:" + repr(sorted(config.flags)).encode()
            if config.profiling_verbosity == "DETAILED":
                plan += b"|LAYERS:" + json.dumps(fuse_layers(network.onnx)).encode()
            return plan

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 1
            self.network = network

        def parse(self, data):
            calls.append(("parse", len(data)))
            self.network.onnx = bytes(data)
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

    class Inspector:
        def __init__(self, layers):
            self.layers = layers

        def get_engine_information(self, fmt):
            calls.append(("get_engine_information", fmt))
            reformat = [{"Name": f"Reformatting CopyNode for Input Tensor 0 to {self.layers[0]}",
                         "LayerType": "Reformat"}] if self.layers else []
            return json.dumps({"Layers": reformat + [{"Name": n, "LayerType": "CaskConvolution"} for n in self.layers],
                               "Bindings": ["input", "logits"]})

    class Engine:
        num_io_tensors = 2
        device_memory_size = 4096

        def __init__(self, layers=None):
            self.layers = layers or []

        def create_engine_inspector(self):
            return Inspector(self.layers)

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            calls.append(("deserialize_cuda_engine", bytes(plan)[:5]))
            _, _, layers = bytes(plan).partition(b"|LAYERS:")
            return Engine(json.loads(layers) if layers else None)

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
        self.next += 1
        self.live.add(("stream", self.next))
        return ("stream", self.next)

    def destroy_stream(self, stream):
        self.live.remove(stream)

    def mem_used(self):
        return 0

    def sync(self, stream):
        self.calls.append(("sync", stream))

    def event(self):
        self.next += 1
        self.live.add(("event", self.next))
        return ("event", self.next)

    def destroy_event(self, event):
        self.live.remove(event)

    def record(self, event, stream):
        self.calls.append(("record", stream))

    def elapsed_ms(self, start, end):
        return self.ms
