"""Task registry: every length-generalization task by name.

Adding a task is one class in the file of its family plus one line here.
"""

from pe_research.tasks.base import Batch, Task
from pe_research.tasks.context_free import ReverseString
from pe_research.tasks.context_sensitive import DuplicateString
from pe_research.tasks.regular import ParityCheck

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        # Regular.
        ParityCheck,
        # Deterministic context-free.
        ReverseString,
        # Context-sensitive.
        DuplicateString,
    )
}


def get_task(name: str) -> Task:
  """The task registered as `name`, with its paper's hyperparameters."""
  if name not in TASKS:
    raise ValueError(f'unknown task {name!r}; known tasks: {", ".join(sorted(TASKS))}')
  return TASKS[name]()


__all__ = ['Batch', 'Task', 'TASKS', 'get_task']
