"""Task streams for continual learning: sources, task specs, seeded splits and the decode cache."""

from .sources import DataError, load_pool
from .stream import build_stream, parse_task_spec, stream_from_pool
from .task import InputSpec, Split, Task, TaskStream

__all__ = ["DataError", "InputSpec", "Split", "Task", "TaskStream", "build_stream", "load_pool",
           "parse_task_spec", "stream_from_pool"]
