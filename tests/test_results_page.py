"""docs/results.md says what its records say: its generated blocks are what
scripts/results_tables.py prints from the committed records, and every number its prose states
is one that those blocks print."""

import os
import re

from tests.conftest import ROOT, load_script

tables = load_script('results_tables')
PAGE = os.path.join(ROOT, 'docs', 'results.md')
NUMBER = re.compile(r'\d+(?:,\d{3})*(?:\.\d+)?')


def numbers(text: str) -> set[str]:
  return set(NUMBER.findall(text))


def prose(section: str) -> str:
  """The section's own words: not its generated blocks, code, headings, pictures or links'
  targets."""
  section = tables.BLOCK.sub('', section)
  section = re.sub(r'```.*?```', '', section, flags=re.S)
  lines = [line for line in section.splitlines()
           if not line.startswith(('    ', '#', '![', '<!--'))]
  text = '\n'.join(lines)
  text = re.sub(r'`[^`]*`', '', text)  # Inline code: commands, paths, field names.
  return re.sub(r'\]\([^)]*\)', ']', text)  # Link targets.


def test_the_committed_page_is_what_its_records_give():
  text = open(PAGE).read()
  assert tables.page(text) == text, 'run: python scripts/results_tables.py --page docs/results.md'


def test_every_number_in_the_prose_is_printed_by_a_block_it_stands_with():
  text = open(PAGE).read()
  everywhere = {m.group(0) for m in tables.BLOCK.finditer(text) if m.group(2).split()[0] in ('rules', 'settings')}
  shared = set().union(*(numbers(block) for block in everywhere))
  unprinted = {}
  for section in re.split(r'\n(?=## )', text):
    printed = shared.union(*(numbers(m.group(0)) for m in tables.BLOCK.finditer(section)))
    missing = sorted(numbers(prose(section)) - printed)
    if missing:
      unprinted[section.splitlines()[0]] = missing
  assert not unprinted, f'numbers the prose states that no block prints: {unprinted}'


def test_the_prose_check_sees_a_number_no_block_prints():
  section = '## A\n\nWe gained 23.3 points.\n\n<!-- results_tables: rules -->\n+29.8\n<!-- end results_tables -->\n'
  assert numbers(prose(section)) == {'23.3'}
  assert numbers(tables.BLOCK.search(section).group(0)) == {'29.8'}
