"""Deterministic context-free tasks (Deletang et al. 2023)."""

import dataclasses

import jax
import jax.numpy as jnp

from pe_research.tasks.base import ModularTask, SymbolTask, Task, random_tokens, scatter_or_drop
from pe_research.tasks.expressions import Alphabet, hash_uniform, random_expression


@dataclasses.dataclass(frozen=True)
class StackManipulation(Task):
  """Run stack instructions on a given initial stack and output the final stack.

  The input is an initial stack of bits, bottom to top, followed by actions POP (2),
  PUSH 0 (3), PUSH 1 (4); a POP on an empty stack is ignored. The answer is the final
  stack top to bottom, then a terminator 2, then 0-padding.
  Examples: `0 1 1 0 PUSH1 POP POP -> 1 1 0 2 0 0 0 0`,
            `1 1 0 POP POP POP -> 2 0 0 0 0 0 0`.
  Vocabulary: inputs {0, 1, 2, 3, 4}; answer {0, 1, 2}. Output length = input length + 1
  (the longest stack plus its terminator). Only the stack and the terminator are scored
  (the mask ends at the terminator). Minimum length 1.
  Sampling (as in the paper): initial stack size ~ U{1 .. max(1, length-1)} with uniform
  bits, the remaining positions uniform actions; so length 1 is a lone bit with no action.
  Chance accuracy 1/2 (a uniform guess of a stack bit).
  """

  name = 'stack_manipulation'
  level = 'context_free'

  input_vocab_size = 5
  output_vocab_size = 3
  chance_accuracy = 0.5
  POP, PUSH0, TERMINATOR = 2, 3, 2

  def output_length(self, length):
    return length + 1

  def sample_example(self, key, length, max_length):
    k_size, k_bits, k_actions = jax.random.split(key, 3)
    stack_size = jax.random.randint(k_size, (), 1, jnp.maximum(length - 1, 1) + 1)
    p = jnp.arange(max_length)
    is_action = (p >= stack_size) & (p < length)
    tokens = jnp.where(p < stack_size, random_tokens(k_bits, 2, max_length),
                       jnp.where(is_action, self.POP + random_tokens(k_actions, 3, max_length), 0))
    # Stack depth after each token: a walk of +-1 reflected at 0 (Skorokhod): depth =
    # walk - min(0, running minimum of walk), which is exactly "pop on empty is ignored".
    walk = stack_size + jnp.cumsum(jnp.where(is_action, jnp.where(tokens == self.POP, -1, 1), 0))
    depth = walk - jnp.minimum(0, jax.lax.cummin(walk, axis=0))
    final_depth = depth[-1]
    # The element at level j of the final stack is the last push that reached level j, or
    # the initial element j if no push ever did (reaching j again after falling below it
    # takes a push, so the last push to level j was never popped).
    is_push = is_action & (tokens >= self.PUSH0)
    last_push = scatter_or_drop(jnp.full(max_length + 1, -1), jnp.where(is_push, depth, max_length + 1), p, 'max')
    i = jnp.arange(max_length + 1)
    level = final_depth - i
    pushed = last_push[jnp.clip(level, 0, max_length)]
    element = jnp.where(pushed >= 0, tokens[jnp.clip(pushed, 0, max_length - 1)] - self.PUSH0,
                        tokens[jnp.clip(level - 1, 0, max_length - 1)])
    targets = jnp.where(i < final_depth, element, jnp.where(i == final_depth, self.TERMINATOR, 0))
    return tokens, targets, i <= final_depth


@dataclasses.dataclass(frozen=True)
class ReverseString(SymbolTask):
  """Reverse a string over `vocab_size` symbols.

  Examples: `0111 -> 1110`, `100 -> 001`.
  Vocabulary: inputs and answers {0, .., vocab_size-1} (paper: 2). Output length = input
  length. Minimum length 1. Chance accuracy 1/vocab_size.
  """

  name = 'reverse_string'
  level = 'context_free'
  vocab_size: int = 2

  def output_length(self, length):
    return length

  def sample_example(self, key, length, max_length):
    tokens = random_tokens(key, self.vocab_size, max_length)
    t = jnp.arange(max_length)
    targets = tokens[jnp.clip(length - 1 - t, 0, max_length - 1)]
    return tokens, targets, t < length


@dataclasses.dataclass(frozen=True)
class ModularArithmeticBrackets(ModularTask):
  """Value modulo `modulus` of a fully bracketed expression with + - * and unary minus.

  The expression of exactly the input length is drawn from the paper's grammar (see
  `pe_research.tasks.expressions`): `d`, `-d`, `(d)`, `(-d)` for lengths 1-4, and
  `(E op E)` with a uniform split of the remaining length above.
  Examples (modulus 5): `((1+2)*(-3)) -> 1` (3 * -3 = -9), `(-4) -> 1`.
  Vocabulary: digits 0..modulus-1 are tokens 0..modulus-1, then + - * ( ) (paper:
  modulus 5, 10 tokens); answer 0..modulus-1. Output length 1. Minimum length 1 (every
  length has an expression). Chance accuracy 1/modulus (the literature's chance level).
  """

  name = 'modular_arithmetic_brackets'
  level = 'context_free'
  multiplication: bool = True

  @property
  def alphabet(self) -> Alphabet:
    m = self.modulus
    return Alphabet(plus=m, minus=m + 1, times=m + 2, open=m + 3, close=m + 4)

  @property
  def input_vocab_size(self):
    return self.modulus + 5

  def sample_example(self, key, length, max_length):
    operators = '+-*' if self.multiplication else '+-'
    expression = random_expression(key, length, max_length, self.modulus, operators, self.alphabet)
    return expression.tokens, expression.value[None], jnp.ones((1,), bool)


@dataclasses.dataclass(frozen=True)
class SolveEquation(ModularTask):
  """Solve a linear equation modulo `modulus` for its unknown x.

  The input is a bracketed expression with + and - (the grammar of
  modular_arithmetic_brackets, without *) of length `length - 2`, in which one digit is
  replaced by `x`, followed by `=` and the expression's value. The answer is the hidden
  digit; x appears once with coefficient +-1, so it is the unique solution.
  Examples (modulus 5): `((x+2)-(-3))=1 -> 1`, `(-x)=2 -> 3`.
  Vocabulary: digits 0..modulus-1 are tokens 0..modulus-1, then + - ( ) x = (paper:
  modulus 5, 11 tokens); answer 0..modulus-1. Output length 1. Minimum length 3 (`x=d`).
  The hidden digit is uniform over the expression's digits (the reference code picks the
  first digit at or after a uniform position, which favours digits after long runs of
  brackets). Chance accuracy 1/modulus.
  """

  name = 'solve_equation'
  level = 'context_free'
  min_length = 3

  @property
  def alphabet(self) -> Alphabet:
    m = self.modulus
    return Alphabet(plus=m, minus=m + 1, times=-1, open=m + 2, close=m + 3)

  @property
  def unknown(self) -> int:
    return self.modulus + 4

  @property
  def equals(self) -> int:
    return self.modulus + 5

  @property
  def input_vocab_size(self):
    return self.modulus + 6

  def sample_example(self, key, length, max_length):
    k_expression, k_hidden = jax.random.split(key)
    expression = random_expression(k_expression, length - 2, max_length, self.modulus, '+-', self.alphabet)
    p = jnp.arange(max_length)
    score = hash_uniform(jax.random.bits(k_hidden, (), jnp.uint32), p)
    hidden = jnp.argmax(jnp.where(expression.is_digit, score, -1.0))
    tokens = jnp.where(p == hidden, self.unknown, expression.tokens)
    tokens = jnp.where(p == length - 2, self.equals, jnp.where(p == length - 1, expression.value, tokens))
    return tokens, expression.tokens[hidden][None], jnp.ones((1,), bool)
