"""README is a guide that stays true: its tables name exactly what the registries hold, its
example runs, and it stays short (measurements live in docs/)."""

import re

from pe_research.encodings import ENCODINGS
from pe_research.tasks import TASKS, get_task
from tests.conftest import ROOT

README = open(f'{ROOT}/README.md').read()


def section(title: str) -> str:
  return README.split(f'## {title}\n', 1)[1].split('\n## ', 1)[0]


def test_the_encodings_table_lists_every_registered_encoding():
  rows = [line for line in section('Encodings').splitlines() if re.match(r'\| `\w+` \|', line)]
  assert sorted(re.match(r'\| `(\w+)`', row).group(1) for row in rows) == sorted(ENCODINGS)
  causal_only = {re.match(r'\| `(\w+)`', row).group(1) for row in rows if row.split(' | ')[3] == 'yes'}
  assert causal_only == {name for name, cls in ENCODINGS.items() if cls.causal_only}


def test_the_tasks_table_lists_every_registered_task_in_its_family():
  rows = [line for line in section('Tasks').splitlines() if re.match(r'\| [\w -]+ \(`\w+\.py`\)', line)]
  listed = {}
  for row in rows:
    family, names = row.strip('| ').split(' | ')
    file = re.search(r'`(\w+)\.py`', family).group(1)
    for name in re.findall(r'`(\w+)`', names):
      listed[name] = file
  assert sorted(listed) == sorted(TASKS)
  assert all(type(get_task(name)).__module__ == f'pe_research.tasks.{file}' for name, file in listed.items())


def test_the_reuse_example_runs():
  code = re.search(r'```python\n(.*?)```', section('Reusing the modules'), re.S).group(1)
  namespace = {}
  exec(code, namespace)  # noqa: S102  (our own README)
  assert namespace['y'].shape == (2, 10, 64)


def test_the_readme_is_a_guide_and_gives_the_two_commands():
  assert len(README.encode()) <= 15_000
  assert 'pip install -e . && python -m pe_research.sweep --sweep=configs/sweeps/quick.py' in README
  assert "pip install -e '.[test]' && pytest" in README
