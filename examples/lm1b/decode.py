"""Temperature / top-k sampling, one token at a time with a decoding cache."""
from typing import Any, Callable, Tuple

import jax
from jax import lax
import jax.numpy as jnp

Array = Any
# tokens_to_logits(tokens [batch, 1], position, cache) -> (logits, cache)
TokensToLogits = Callable[[Array, Array, Any], Tuple[Array, Any]]


def sample_logits(rng: Array, logits: Array, temperature: float = 1.0,
                  top_k: int = 0) -> Array:
  """Samples ids from `logits` [batch, vocab]: only among the `top_k` most
  likely if `top_k` > 0; the most likely one if `temperature` is 0."""
  if top_k:
    kth_best = lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth_best, -jnp.inf, logits)
  if temperature == 0.:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, logits / temperature).astype(jnp.int32)


def temperature_sample(prompts: Array, cache: Any,
                       tokens_to_logits: TokensToLogits, rng: Array,
                       eos_id: int, temperature: float = 1.0,
                       top_k: int = 0) -> Array:
  """Continues each prompt by sampling until EOS or the end of the array.

  Arguments:
    prompts: int32 [batch, length]: each row a prompt's ids, left-aligned and
      followed by 0s; `length` is how many tokens to produce in all.
    cache: an attention `Cache` initialized for `(batch, length)`.
    tokens_to_logits: runs the model on the token at one position (the
      start token 0, then the previous output) and returns the logits of the
      next token and the new cache.
    rng: the PRNG key of the sampling.
    eos_id: the end-of-sentence id: a row stops after sampling it.
    temperature: divides the logits (0: greedy decoding).
    top_k: if > 0, sample only among the `top_k` most likely tokens.
  Returns:
    int32 [batch, length]: the prompt, then the sampled tokens up to and
    including EOS, then 0s.
  """
  batch, length = prompts.shape
  prompt_lengths = jnp.sum(prompts != 0, axis=1)
  sequences = jnp.pad(prompts, ((0, 0), (1, 0)))  # a start token 0 in front

  def step(carry, t):
    cache, sequences, rng, done = carry
    token = lax.dynamic_slice_in_dim(sequences, t, 1, axis=1)
    logits, cache = tokens_to_logits(token, t, cache)
    rng, sample_rng = jax.random.split(rng)
    sampled = sample_logits(sample_rng, logits, temperature, top_k)
    in_prompt = t < prompt_lengths
    given = lax.dynamic_slice_in_dim(sequences, t + 1, 1, axis=1)[:, 0]
    new = jnp.where(in_prompt, given, jnp.where(done, 0, sampled))
    done = done | (~in_prompt & (new == eos_id))
    sequences = lax.dynamic_update_slice_in_dim(sequences, new[:, None],
                                                t + 1, axis=1)
    return (cache, sequences, rng, done), None

  init = (cache, sequences, rng, jnp.zeros((batch,), bool))
  (_, sequences, _, _), _ = lax.scan(step, init, jnp.arange(length))
  return sequences[:, 1:]
