"""`python -m pe_research.tasks` lists every task with its level, vocabularies and chance."""

import runpy

from pe_research.tasks import TASKS, get_task


def test_listing_names_every_task(capsys):
  runpy.run_module('pe_research.tasks', run_name='__main__')
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].split()[:2] == ['task', 'level']
  rows = {line.split()[0]: line.split() for line in lines[1:]}
  assert list(rows) == list(TASKS)
  for name, row in rows.items():
    task = get_task(name)
    assert row[1:] == [task.level, str(task.input_vocab_size), str(task.output_vocab_size), str(task.min_length),
                       f'{task.chance_accuracy:.3f}']
