"""The training protocol of the claims experiments (`python -m pe_research.inspect claims`).

    python -m pe_research.inspect claims --workdir=runs/claims --out=docs/figures

The default model (2 layers, width 64, 4 heads of width 16, pre-LayerNorm, bidirectional)
on reverse_string, as configs/sweeps/quick.py trains it: 1,500 steps with a cosine decay
of the rate (under which every encoding but NoPE learns the training lengths), lengths
1..16, every length up to 48 tested; one seed (`--config.num_seeds=2` for two, trained
together). Each claim changes one field of it: the encoding, model.attention_scale or
model.norm.

Expected: about 7 minutes for the nine runs on an idle 2-core CPU (longer under load),
then the figures and claims.md in --out.
"""

import os

from pe_research.cli import load_config_file

DEFAULT = os.path.join(os.path.dirname(__file__), 'default.py')


def get_config():
  config = load_config_file(DEFAULT)
  config.train.update(steps=1500, schedule='cosine')
  config.eval.update(max_length=48, batch_size=32)
  return config
