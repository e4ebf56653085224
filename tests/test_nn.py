"""Shared layers compute exactly what the textbook forms they replace compute."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen.nn.conv import UpsampleConv, upsample_conv
from gen.nn.embeddings import sincos_2d, sinusoidal
from gen.nn.norm import GroupNorm


@pytest.mark.parametrize("shape,groups", [((3, 5, 4, 12), 4), ((2, 3, 3, 8), 1), ((2, 6, 16), 8)])
def test_group_norm_matches_flax(shape, groups):
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), shape)
  ours, theirs = GroupNorm(groups), nn.GroupNorm(groups)
  params = theirs.init(jax.random.key(1), x)
  assert jax.tree.structure(ours.init(jax.random.key(1), x)) == jax.tree.structure(params)
  # Non-trivial affine parameters, so a wrong scale/bias broadcast would show.
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), atol=2e-5)

  def loss(module):
    return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  g_theirs = jax.grad(loss(theirs), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), g_ours, g_theirs)


def test_group_norm_rejects_groups_that_do_not_divide():
  with pytest.raises(ValueError, match="10 channels do not split into 4 groups"):
    GroupNorm(4).init(jax.random.key(0), jnp.zeros((1, 2, 2, 10)))


@pytest.mark.parametrize("hw", [(1, 1), (4, 4), (7, 5)])
def test_upsample_conv_is_resize_then_conv(hw):
  x = jax.random.normal(jax.random.key(0), (2, *hw, 3))
  conv = nn.Conv(5, (3, 3))
  params = conv.init(jax.random.key(1), jnp.zeros((1, 2 * hw[0], 2 * hw[1], 3)))
  params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias
  up = jax.image.resize(x, (2, 2 * hw[0], 2 * hw[1], 3), "nearest")
  want = conv.apply(params, up)
  got = UpsampleConv(5).apply(params, x)  # the same parameter tree as the Conv it replaces
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-5)
  # And the gradient through it, for training.
  kernel, bias = params["params"]["kernel"], params["params"]["bias"]
  g_got = jax.grad(lambda x: jnp.sum(upsample_conv(x, kernel, bias) ** 2))(x)
  g_want = jax.grad(lambda x: jnp.sum(conv.apply(params, jax.image.resize(
      x, (2, 2 * hw[0], 2 * hw[1], 3), "nearest")) ** 2))(x)
  np.testing.assert_allclose(g_got, g_want, rtol=1e-4, atol=1e-3)


def test_upsample_conv_rejects_a_kernel_of_the_wrong_shape():
  with pytest.raises(ValueError, match=r"must be \[3, 3, 4, O\]"):
    upsample_conv(jnp.zeros((1, 2, 2, 4)), jnp.zeros((3, 3, 3, 8)))


def test_sincos_2d_codes_rows_then_columns_in_raster_order():
  h, w, dim = 3, 5, 16
  emb = np.asarray(sincos_2d(h, w, dim))
  assert emb.shape == (h * w, dim)
  rows = np.asarray(sinusoidal(jnp.arange(h), dim // 2))
  cols = np.asarray(sinusoidal(jnp.arange(w), dim // 2))
  for r in range(h):
    for c in range(w):
      np.testing.assert_allclose(emb[r * w + c], np.concatenate([rows[r], cols[c]]))
  # Every token gets its own code.
  dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
  assert dist[~np.eye(h * w, dtype=bool)].min() > 0.1


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-6), (jnp.bfloat16, 1e-2)])
@pytest.mark.parametrize("block", [None, (2, 4), (3, 12), (1, 3)])
@pytest.mark.parametrize("is_causal", [False, True])
def test_dot_product_attention_is_jax_reference(dtype, tol, block, is_causal):
  """gen's attention on CPU (two einsums, whole or in blocks of (batch, head) rows and queries
  recomputed in the backward pass) is jax.nn.dot_product_attention's math: outputs and the
  gradients of q, k and v, self- and cross-attention (T != S), causal or not, as many
  key/value heads as query heads or one shared by all three, float32 and bfloat16."""
  from gen.nn.attention import dot_product_attention

  attention = functools.partial(dot_product_attention, is_causal=is_causal, block=block)
  reference = functools.partial(jax.nn.dot_product_attention, is_causal=is_causal)
  ks = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(ks[0], (2, 12, 3, 8)).astype(dtype)
  g = jax.random.normal(ks[3], q.shape).astype(dtype)
  for s, heads in ((12, 3), (5, 3), (12, 1)):
    k = jax.random.normal(ks[1], (2, s, heads, 8)).astype(dtype)
    v = jax.random.normal(ks[2], (2, s, heads, 8)).astype(dtype)
    got, got_vjp = jax.vjp(attention, q, k, v)
    want, want_vjp = jax.vjp(reference, q, k, v)
    assert got.dtype == want.dtype and got.shape == want.shape
    for a, b in zip((got, *got_vjp(g)), (want, *want_vjp(g))):
      np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                 atol=tol, rtol=tol)
  with pytest.raises(ValueError, match="3 query heads cannot share 2 key/value heads"):
    attention(q, k[:, :, :1].repeat(2, 2), v[:, :, :1].repeat(2, 2))


def test_dot_product_attention_blocks_large_logits():
  """Logits of BLOCKED_MIN_BYTES or more with BLOCKED_MIN_KEYS keys or more run in blocks (a
  loop in the compiled program) and still give jax's numbers; fewer keys (cross-attention to a
  caption) or smaller logits do not; causal blocks skip the keys after their last query;
  blocks that do not divide the shapes are refused."""
  from gen.nn import attention

  t = attention.QUERY_BLOCK * 2  # [2, 3, 512, 512] float32 logits: 6 MiB.
  ks = jax.random.split(jax.random.key(1), 3)
  q, k, v = (jax.random.normal(key, (2, t, 3, 4)) for key in ks)
  assert 2 * 3 * t * t * 4 >= attention.BLOCKED_MIN_BYTES and t >= attention.BLOCKED_MIN_KEYS

  def loops(*args):
    return jax.jit(attention.dot_product_attention).lower(*args).as_text().count("while")
  assert loops(q, k, v) == 2  # Over (batch, head) rows, then over query blocks.
  assert loops(q, k[:, :attention.BLOCKED_MIN_KEYS - 1], v[:, :attention.BLOCKED_MIN_KEYS - 1]) == 0
  assert loops(q[:, :16], k[:, :16], v[:, :16]) == 0
  np.testing.assert_allclose(attention.dot_product_attention(q, k, v),
                             jax.nn.dot_product_attention(q, k, v), atol=2e-6, rtol=2e-6)
  # Causal: the query blocks are unrolled (one loop, over rows), each reading only the keys
  # up to its last query.
  causal = functools.partial(attention.dot_product_attention, is_causal=True)
  hlo = jax.jit(causal).lower(q, k, v).as_text()
  assert hlo.count("while") == 1
  q_block = attention.CAUSAL_QUERY_BLOCK
  for j in range(t // q_block):  # Block j's logits: its queries by the keys up to its last.
    assert f"2x{q_block}x{(j + 1) * q_block}xf32" in hlo
  np.testing.assert_allclose(causal(q, k, v), jax.nn.dot_product_attention(q, k, v, is_causal=True),
                             atol=2e-6, rtol=2e-6)
  with pytest.raises(ValueError, match="do not divide 2 x 3 rows and 512 queries"):
    attention.dot_product_attention(q, k, v, block=(4, 256))
  with pytest.raises(ValueError, match="do not divide"):
    attention.dot_product_attention(q, k, v, block=(2, 300))
