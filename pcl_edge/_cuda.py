"""The few CUDA runtime calls the device side needs (memory, streams, events), through cuda-python, never torch.
One place so that the calibrator, the TensorRT timing backend and the runtime share it (and tests can fake it)."""

from __future__ import annotations

from types import ModuleType


class CudaError(RuntimeError):
    pass


def cudart() -> ModuleType:
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as runtime  # older cuda-python
        except ImportError:
            raise CudaError("cuda-python is not installed (pip install cuda-python): needed for device memory "
                            "without torch") from None
    return runtime


def check(result):
    """cuda-python returns (err, *values): raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CudaError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values)


class Cuda:
    def __init__(self, rt: ModuleType | None = None) -> None:
        self.rt = rt or cudart()

    def malloc(self, nbytes: int) -> int:
        return int(check(self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        check(self.rt.cudaFree(ptr))

    def upload(self, ptr: int, host) -> None:
        check(self.rt.cudaMemcpy(ptr, host.ctypes.data, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice))

    def download(self, host, ptr: int) -> None:
        check(self.rt.cudaMemcpy(host.ctypes.data, ptr, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost))

    def stream(self):
        return check(self.rt.cudaStreamCreate())

    def sync(self, stream) -> None:
        check(self.rt.cudaStreamSynchronize(stream))

    def destroy_stream(self, stream) -> None:
        check(self.rt.cudaStreamDestroy(stream))

    def mem_used(self) -> int:
        """Device memory in use now, all processes (total - free): what a session's load adds is the difference."""
        free, total = check(self.rt.cudaMemGetInfo())
        return int(total) - int(free)

    def event(self):
        return check(self.rt.cudaEventCreate())

    def destroy_event(self, event) -> None:
        check(self.rt.cudaEventDestroy(event))

    def record(self, event, stream) -> None:
        check(self.rt.cudaEventRecord(event, stream))

    def elapsed_ms(self, start, end) -> float:
        check(self.rt.cudaEventSynchronize(end))
        return float(check(self.rt.cudaEventElapsedTime(start, end)))
