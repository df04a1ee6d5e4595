"""TensorRT engines, built ON the device that runs them, from a bundle's ONNX models (TensorRT 10 API; 8.6 shims
in ``_trt_compat``). No torch: this runs on the Jetson.

Per task: parse the ONNX (parser errors surfaced), one optimisation profile for the spec's min/opt/max batch, a
workspace limit, FP16 / INT8 flags (INT8 with entropy calibration on images the user supplies at build time), a
timing cache shared by all tasks, and an engine file whose header is the ``EngineSpec`` it was built for."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from pathlib import Path

from .._io import atomic_open
from . import _trt_compat as compat
from .archive import bundle_dir, read_verified, verify_bundle
from .engine import EngineHeader, EngineLedger, EngineMismatch, EngineSpec, engine_dir, read_engine, write_engine

log = logging.getLogger(__name__)


class EngineBuildError(RuntimeError):
    """TensorRT could not build an engine (parser or builder errors are in the message)."""


def gpu_name() -> str:
    """The GPU this process would build for: cuda-python if present, else nvidia-smi, else the Jetson model."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            cudart = None
    if cudart is not None:
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            return props.name.decode(errors="replace").strip("\x00").strip()
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    model = Path("/proc/device-tree/model")
    return model.read_text().strip("\x00").strip() if model.exists() else "unknown-gpu"


def build_plan(trt, onnx_bytes: bytes, input_name: str, chw: tuple[int, ...], opts: EngineSpec,
               timing_cache: bytes = b"", calibrator=None, detailed: bool = False) -> tuple[bytes, bytes]:
    """One engine plan and the (updated) serialized timing cache. ``detailed`` keeps per-layer information in the
    plan (``ProfilingVerbosity.DETAILED``) for the engine inspector."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = compat.create_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT's ONNX parser rejected the model: {errors or 'no detail given'}")
    config = builder.create_builder_config()
    compat.set_workspace(trt, config, opts.workspace_mb << 20)
    if opts.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers TensorRT cannot quantise fall back to fp16, not fp32
    if opts.precision == "int8":
        if calibrator is None:
            raise EngineBuildError("int8 needs calibration images: pass --calib-dir DIR")
        config.set_flag(trt.BuilderFlag.INT8)
        compat.set_calibrator(config, calibrator)
    for name in opts.build_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if opts.dla_core is not None:  # layers the DLA cannot run fall back to the GPU
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (opts.min_batch, *chw), (opts.opt_batch, *chw), (opts.max_batch, *chw))
    config.add_optimization_profile(profile)
    if detailed:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def trtexec_command(model: Path, engine: Path, input_name: str, chw: tuple[int, ...], opts: EngineSpec,
                    timing_cache: Path) -> str:
    """The equivalent command line, for people who prefer trtexec."""
    dims = "x".join(map(str, chw))
    args = ["trtexec", f"--onnx={model}", f"--saveEngine={engine}", f"--minShapes={input_name}:{opts.min_batch}x{dims}",
            f"--optShapes={input_name}:{opts.opt_batch}x{dims}", f"--maxShapes={input_name}:{opts.max_batch}x{dims}",
            f"--memPoolSize=workspace:{opts.workspace_mb}M", f"--timingCacheFile={timing_cache}"]
    if opts.precision != "fp32":
        args.append("--fp16")
    if opts.precision == "int8":
        args.append("--int8")  # trtexec wants --calib=<cache> for real scales; use the cache this tool writes
    if opts.dla_core is not None:
        args += [f"--useDLACore={opts.dla_core}", "--allowGPUFallback"]
    return shlex.join(args)


def engine_path(cache_dir: Path, header: EngineHeader) -> Path:
    return Path(cache_dir) / header.key()


def build_engines(bundle: str | Path, spec: EngineSpec | None = None, cache_dir: str | Path | None = None,
                  calib_dir: str | Path | None = None, trt=None, ledger: EngineLedger | None = None) -> list[Path]:
    """Build (or reuse, when the header matches) an engine per task of ``bundle``; returns the engine paths. With the
    service's ``ledger`` (its bundle store's), the service will load what this built."""
    spec = spec or EngineSpec()
    trt = trt or compat.import_tensorrt()
    manifest = verify_bundle(bundle)
    cache_dir = Path(cache_dir) if cache_dir else engine_dir(bundle)
    spec = spec.for_device(trt)
    with bundle_dir(bundle) as root:
        return [ensure_engine(trt, root, task, spec, cache_dir, calib_dir, ledger)[0] for task in manifest["tasks"]]


def ensure_engine(trt, root: Path, task: dict, spec: EngineSpec, cache_dir: Path,
                  calib_dir: str | Path | None = None, ledger: EngineLedger | None = None) -> tuple[Path, EngineHeader]:
    """The engine of one task of a (verified) bundle directory: reused when its header matches ``spec`` (filled in
    for this device) and, with a ``ledger``, its plan is one the ledger recorded for this model; built otherwise,
    from the model bytes re-hashed against the manifest. The timing cache in ``cache_dir`` is read before and written
    after every build."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not spec.tensorrt_version:
        spec = spec.for_device(trt)
    header = EngineHeader(model_sha256=task["sha256"], spec=spec)
    path = engine_path(cache_dir, header)
    if path.exists():
        try:
            load_engine_plan(path, header, ledger)
            log.info("task %s: engine up to date (%s)", task["id"], path.name)
            return path, header
        except EngineMismatch as exc:
            log.warning("task %s: %s", task["id"], exc)
    timing_path = cache_dir / f"timing-trt{trt.__version__}.cache"
    timing = timing_path.read_bytes() if timing_path.exists() else b""
    chw = tuple(task["input"]["shape"])
    model = root / task["model"]
    data = read_verified(root, task["model"], task["sha256"])
    log.info("task %s: building %s engine; equivalent: %s", task["id"], spec.precision,
             trtexec_command(model, path, task["input"]["name"], chw, spec, timing_path))
    calibrator = None
    if spec.precision == "int8":
        from .calibration import make_calibrator

        calibrator = make_calibrator(trt, task, calib_dir, cache_dir, bundle_root=root)
    plan, timing = build_plan(trt, data, task["input"]["name"], chw, spec, timing, calibrator)
    write_engine(path, header, plan)
    if ledger is not None:
        ledger.record(path.name, task["sha256"], bytes(plan))
    with atomic_open(timing_path, "wb") as fh:  # reused by the next task and the next build
        fh.write(timing)
    return path, header


def load_engine_plan(path: Path, expected: EngineHeader, ledger: EngineLedger | None = None) -> bytes:
    """The plan bytes, only if the header matches what this device needs and, with a ``ledger``, the plan's sha256
    is the one recorded when it was built (else EngineMismatch: rebuild). Re-hashed on every load."""
    header, plan = read_engine(path)
    header.check(expected)
    if ledger is not None and not ledger.matches(path.name, expected.model_sha256, plan):
        raise EngineMismatch(f"engine {path.name} is not one this service built for model "
                             f"{expected.model_sha256[:16]} (its plan's sha256 is not recorded): rebuild it")
    return plan
