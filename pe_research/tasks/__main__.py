"""Lists every registered task: `python -m pe_research.tasks`."""

from pe_research.tasks import TASKS, get_task


def listing() -> str:
  """One row per task: name, level, vocabulary sizes, minimum length, chance accuracy."""
  header = ('task', 'level', 'input vocab', 'output vocab', 'min length', 'chance')
  rows = []
  for name in TASKS:
    task = get_task(name)
    rows.append((name, task.level, str(task.input_vocab_size), str(task.output_vocab_size), str(task.min_length),
                 f'{task.chance_accuracy:.3f}'))
  widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
  return '\n'.join('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                   for row in (header, *rows))


if __name__ == '__main__':
  print(listing())
