"""The project's Transformer written again in PyTorch, for `scripts/benchmark.py`.

Same model as `pe_research.model.Transformer` with the `sinusoidal` encoding, pre-LayerNorm
and bidirectional attention: token embedding * sqrt(D) + Vaswani's interleaved sinusoid code
of the positions -> N x [x + attention(LN(x)), x + MLP(LN(x))] -> LN -> linear head at the
answer slots. Attention: four bias-free D x D projections, `num_heads` heads, scale
1/sqrt(D/H), a padding mask, through `scaled_dot_product_attention` (PyTorch's fused
kernels, on CPU or CUDA); MLP: D -> mlp_ratio*D -> D with biases and tanh-approximated GELU
(jax.nn.gelu's default); LayerNorm epsilon 1e-6 (Flax's). Training: masked cross-entropy,
global-norm clipping then Adam (`pe_research.training.optimizer`, at its peak rate: the
schedule is a scalar per step and costs nothing), on a batch cut into parts of different
lengths as the JAX step's (`pe_research.training.train_step`). Module names follow the Flax
model's, so its parameters load by name (`load_flax_params`). PyTorch is optional: only the
benchmark imports this file.
"""

import math

import flax.nnx as nnx
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pe_research.model.readout import model_vocab_size

LAYER_NORM_EPSILON = 1e-6


def sinusoid(positions_BxT: torch.Tensor, dim: int, base: float) -> torch.Tensor:
  """[B, T, dim] interleaved sin/cos codes (as `pe_research.encodings.sinusoidal.sinusoid`)."""
  inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=positions_BxT.device) / dim)
  angles = positions_BxT.float()[..., None] * inv_freq
  return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class Attention(nn.Module):

  def __init__(self, dim: int, num_heads: int):
    super().__init__()
    self.num_heads = num_heads
    self.query, self.key, self.value, self.output = (nn.Linear(dim, dim, bias=False) for _ in range(4))

  def forward(self, x_BxTxD, mask_Bx1x1xT):
    batch, length, dim = x_BxTxD.shape
    split = lambda y: y.view(batch, length, self.num_heads, -1).transpose(1, 2)  # noqa: E731
    out_BxHxTxK = F.scaled_dot_product_attention(
        split(self.query(x_BxTxD)), split(self.key(x_BxTxD)), split(self.value(x_BxTxD)), attn_mask=mask_Bx1x1xT
    )
    return self.output(out_BxHxTxK.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):

  def __init__(self, dim: int, num_heads: int, mlp_ratio: int):
    super().__init__()
    self.attention = Attention(dim, num_heads)
    self.mlp_in = nn.Linear(dim, mlp_ratio * dim)
    self.mlp_out = nn.Linear(mlp_ratio * dim, dim)
    self.norm_attention = nn.LayerNorm(dim, eps=LAYER_NORM_EPSILON)
    self.norm_mlp = nn.LayerNorm(dim, eps=LAYER_NORM_EPSILON)

  def forward(self, x, mask):
    x = x + self.attention(self.norm_attention(x), mask)
    return x + self.mlp_out(F.gelu(self.mlp_in(self.norm_mlp(x)), approximate='tanh'))


class Transformer(nn.Module):
  """forward(tokens, positions, valid, answer_index) -> logits [B, O, output vocabulary]."""

  def __init__(self, config, task):
    super().__init__()
    m = config.model
    self.dim, self.base = m.model_dim, config.encoding.sinusoidal.base
    self.embed = nn.Embedding(model_vocab_size(task.input_vocab_size), m.model_dim)
    self.blocks = nn.ModuleList(Block(m.model_dim, m.num_heads, m.mlp_ratio) for _ in range(m.num_layers))
    self.final_norm = nn.LayerNorm(m.model_dim, eps=LAYER_NORM_EPSILON)
    self.head = nn.Linear(m.model_dim, task.output_vocab_size)

  def forward(self, tokens, positions, valid, answer_index):
    """tokens, positions, valid [B, T] and answer_index [B, O] as the JAX model's."""
    x = self.embed(tokens) * math.sqrt(self.dim) + sinusoid(positions, self.dim, self.base)
    mask = valid[:, None, None, :]
    for block in self.blocks:
      x = block(x, mask)
    x = self.final_norm(x)
    return self.head(torch.take_along_dim(x, answer_index[:, :, None], dim=1))


def unsupported(config) -> str | None:
  """Why the twin cannot stand for the model of `config`; None if it can."""
  differences = {
      'encoding.name': (config.encoding.name, 'sinusoidal'),
      'encoding.abacus.enabled': (config.encoding.abacus.enabled, False),
      'model.norm': (config.model.norm, 'pre'),
      'model.causal': (config.model.causal, False),
      'model.dropout': (config.model.dropout, 0.0),
      'model.matmul_dtype': (config.model.matmul_dtype, 'float32'),
      'model.attention_scale': (config.model.attention_scale, 'sqrt_dk'),
  }
  wrong = [f'{name}={value!r}' for name, (value, wanted) in differences.items() if value != wanted]
  return f'the PyTorch twin has no {", ".join(wrong)}' if wrong else None


def load_flax_params(model: Transformer, params: nnx.State) -> None:
  """Copies one seed's Flax parameters into `model` (kernels transposed)."""
  renamed = {'kernel': 'weight', 'embedding': 'weight', 'scale': 'weight', 'bias': 'bias'}
  state = {}
  for path, value in nnx.to_flat_state(params):
    value = np.array(value[...] if isinstance(value, nnx.Variable) else value)
    name = '.'.join(map(str, (*path[:-1], renamed[path[-1]])))
    state[name] = torch.from_numpy(value.T if path[-1] == 'kernel' else value)
  model.load_state_dict(state, strict=True)


def make_train_step(model: Transformer, train_config):
  """step(parts) -> loss: one eager training step on a batch given as parts (dicts of
  tensors: tokens, positions, valid, answer_index, targets, loss_mask), each padded to its
  own length; the loss is the mean cross-entropy over every part's scored answer tokens
  (as the JAX step's)."""
  params = list(model.parameters())
  optimizer = torch.optim.Adam(params, lr=train_config.learning_rate, fused=True)

  def step(parts):
    total, scored = 0.0, 0.0
    for part in parts:
      logits = model(part['tokens'], part['positions'], part['valid'], part['answer_index'])
      losses = F.cross_entropy(logits.flatten(0, 1), part['targets'].flatten(), reduction='none')
      mask = part['loss_mask'].flatten().float()
      total, scored = total + (losses * mask).sum(), scored + mask.sum()
    loss = total / scored.clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(params, train_config.grad_clip, foreach=True)
    optimizer.step()
    return loss

  return step


def to_torch(arrays: dict, device: str = 'cpu') -> dict:
  """numpy (or JAX) arrays -> tensors on `device`, int64 ids for embedding and gather."""
  tensors = {k: torch.from_numpy(np.array(v)).to(device) for k, v in arrays.items()}
  return {k: t.long() if t.dtype == torch.int32 else t for k, t in tensors.items()}
