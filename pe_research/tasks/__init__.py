"""Task registry: every length-generalization task by name.

Adding a task is one class in the file of its family plus one line here. List them with
`python -m pe_research.tasks`.
"""

from pe_research.tasks.base import Batch, Task
from pe_research.tasks.classic import (
    AssociativeRecall,
    Addition,
    Copy,
    Count,
    FlipFlop,
    IndexLookup,
    SelectiveCopy,
    Sort,
)
from pe_research.tasks.context_free import (
    ModularArithmeticBrackets,
    ReverseString,
    SolveEquation,
    StackManipulation,
)
from pe_research.tasks.context_sensitive import (
    BinaryAddition,
    BinaryMultiplication,
    BucketSort,
    ComputeSqrt,
    DuplicateString,
    MissingDuplicateString,
    OddsFirst,
)
from pe_research.tasks.regular import CycleNavigation, EvenPairs, ModularArithmetic, ParityCheck

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        # Regular (Deletang et al. 2023).
        EvenPairs,
        ModularArithmetic,
        ParityCheck,
        CycleNavigation,
        # Deterministic context-free.
        StackManipulation,
        ReverseString,
        ModularArithmeticBrackets,
        SolveEquation,
        # Context-sensitive.
        DuplicateString,
        MissingDuplicateString,
        OddsFirst,
        BinaryAddition,
        BinaryMultiplication,
        ComputeSqrt,
        BucketSort,
        # Classic copy, arithmetic and recall tasks.
        Copy,
        Sort,
        Addition,
        AssociativeRecall,
        IndexLookup,
        Count,
        SelectiveCopy,
        FlipFlop,
    )
}

LEVELS = ('regular', 'context_free', 'context_sensitive', 'classic')


def get_task(name: str) -> Task:
  """The task registered as `name`, with its paper's hyperparameters."""
  if name not in TASKS:
    raise ValueError(f'unknown task {name!r}; known tasks: {", ".join(sorted(TASKS))}')
  return TASKS[name]()


__all__ = ['Batch', 'LEVELS', 'Task', 'TASKS', 'get_task']
