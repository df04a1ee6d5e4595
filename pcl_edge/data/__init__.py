"""Task streams for continual learning: sources, task specs, seeded splits and the decode cache."""

from .plan import RunPlan, TaskDef, extend_plan, normalize_source, parse_task_spec
from .sources import DataError, load_pool
from .stream import build_stream, plan_stream, stream_from_plan, stream_from_pool
from .task import InputSpec, Split, Task, TaskStream

__all__ = ["DataError", "InputSpec", "RunPlan", "Split", "Task", "TaskDef", "TaskStream", "build_stream", "extend_plan",
           "load_pool", "normalize_source", "parse_task_spec", "plan_stream", "stream_from_plan", "stream_from_pool"]
