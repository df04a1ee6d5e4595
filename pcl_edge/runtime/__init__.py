"""The device side: bundles in, answers out, by task id. NO torch here (a test runs this package with torch made
unimportable): numpy, onnxruntime(-gpu) and/or tensorrt + cuda-python, and the HTTP / serial stacks only."""

from .errors import BadRequest, RuntimeFailure, ServiceUnavailable, UnknownTask
from .router import Router

__all__ = ["BadRequest", "Router", "RuntimeFailure", "ServiceUnavailable", "UnknownTask"]
