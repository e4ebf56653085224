"""Where a train step's time goes, ours against PyTorch's, at the SD-UNet and Llama shapes.

  python benchmarks/peers/train_profile.py --model=sd-unet [--size=32] [--batch=2]
      [--widths=160,320,640,640] [--heads=4] [--repeats=3] [--threads=2] [--json]
  python benchmarks/peers/train_profile.py --model=llama [--seq=256] [--batch=2] [...]

`sd-unet`: Stable Diffusion 1.x's UNet2DConditionModel layout (three CrossAttnDownBlock2D and
a DownBlock2D, mirrored up, 2 resnets per block, 1 transformer layer, GroupNorm 32, SD's
1x1-conv projections, 77 x 768 text states) on `--size` x `--size` x 4 latents, at
`--widths` channels (SD's are 320,640,1280,1280: 860M parameters, whose train state twice over
does not fit this machine's memory) with `--heads` heads (SD's 8 heads of 40, 80, 160 at its
widths; 4 heads keep those head widths at half the channels). Ours is
`gen.diffusion.diffusers.unet2d_condition` (as `gen import` builds it), theirs diffusers'.
Loss: MSE on the noise at given noisy latents, timesteps and text states (a frozen text
encoder's); AdamW (lr 1e-4, weight decay 0.01 on matrices, clipping at 1), no EMA.

`llama`: SmolLM-135M's shape (as `peers/llama.py`): ours is the model `gen import` builds,
theirs transformers' LlamaForCausalLM; `--batch` x `--seq` tokens, next-token cross-entropy,
AdamW (lr 3e-4, weight decay 0.1 on matrices, clipping at 1). Random float32 weights.

Three tables, each pair timed in turns (`measure.in_turns`, median of `--repeats`; torch on
`--threads` threads), milliseconds:
- `phases`: the loss (forward), its value and gradient (forward + backward), the whole train
  step, and the optimizer update alone (ours with the state donated; theirs `opt.step()`
  after clipping, the gradients in place).
- `pieces`: each kind of layer timed on its own at every input shape the network gives it
  (recorded while tracing ours with `flax.linen.intercept_methods` and while running theirs
  with forward pre-hooks), forward and forward + backward (gradients of the inputs and the
  layer's parameters, ones as the output's cotangent), summed over the network's calls:
  blocks (resnets, transformers / decoder layers) and the layers inside them (convolutions,
  norms, linear layers, attention with and without its projections, MLPs). Ours are compiled
  with the pipeline's XLA options, one program per piece: what XLA fuses across a piece's
  edges in the whole program is not in them. The attention core is q, k, v in, the attended
  values out (`gen.nn.attention.dot_product_attention`, which the networks call;
  `F.scaled_dot_product_attention`).
  `piece_shapes` has each distinct call's milliseconds.
- `torch_ops`: torch.profiler's self CPU time per aten op over theirs forward + backward,
  grouped (convolutions, convolution backward, norms, attention, matmuls, elementwise,
  copies), and the top ops. (No such table for ours: XLA:CPU's profiler leaves most of
  the convolutions' and matmuls' work outside its op spans.)
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from collections.abc import Callable

import compare
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import measure
from gen.core import xla
from gen.core.family import TrainState, make_optimizer
from gen.nn import attention as gen_attention

LATENT_CHANNELS, TEXT_TOKENS, TEXT_WIDTH = 4, 77, 768


@dataclasses.dataclass
class Side:
  """One implementation: its loss, its parameters (ours) or model (theirs), and how its
  layers are grouped into kinds."""

  loss: Callable  # ours: loss(params, *data); theirs: loss() -> tensor
  params: object  # ours: the params; theirs: the model
  kinds: dict[str, str]  # layer class (or, theirs, `name:` + module name) -> kind
  data: tuple = ()  # ours: the batch, arguments of every program


@dataclasses.dataclass
class Profile:
  ours: Side
  theirs: Side
  tx: object  # our optax transformation
  opt: object  # their optimizer
  clip: float
  options: dict  # our XLA compiler options
  attention: Callable  # (recorded call of ours) -> (q, k, v shapes, causal, kv_heads)
  # More pieces: () -> [(kind, count, our function, its arguments, theirs, its arguments)].
  extra: Callable | None = None
  meta: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------- the models


def optim(name: str, lr: float, wd: float, clip: float):
  """Our optimizer (`gen.core.family.make_optimizer`) at a constant learning rate."""
  from gen.core.config import ConfigDict
  o = ConfigDict({"name": name, "lr": lr, "b1": 0.9, "b2": 0.999, "weight_decay": wd,
                  "warmup_steps": 0, "schedule": "constant", "min_lr_ratio": 1.0,
                  "grad_clip": clip, "grad_accum_steps": 1})
  return make_optimizer(o, 1000)


def torch_adamw(model, lr, wd):
  params = [p for p in model.parameters() if p.requires_grad]
  return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": wd},
                            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                           lr=lr, betas=(0.9, 0.999), eps=1e-8)


def sd_unet(args) -> Profile:
  import diffusers

  from gen.diffusion.config import default_config
  from gen.diffusion.diffusers import unet2d_condition

  widths = tuple(int(w) for w in args.widths.split(","))
  heads = (args.heads,) * len(widths)
  u = default_config().model.text_to_image.unet
  u.update(block_out_channels=widths, attention_head_dim=heads)
  net = unet2d_condition.from_config(u)
  b, s = args.batch, args.size
  rng = np.random.default_rng(0)
  x = rng.standard_normal((b, s, s, LATENT_CHANNELS), np.float32)
  eps = rng.standard_normal((b, s, s, LATENT_CHANNELS), np.float32)
  t = rng.integers(0, 1000, (b,)).astype(np.float32)
  ctx = rng.standard_normal((b, TEXT_TOKENS, TEXT_WIDTH), np.float32)
  params = jax.jit(net.init)(jax.random.key(0), x[:1], t[:1], ctx[:1])["params"]

  def loss(p, x, t, ctx, eps):
    return jnp.mean((net.apply({"params": p}, x, t, ctx) - eps) ** 2)

  model = diffusers.UNet2DConditionModel(
      sample_size=s, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
      block_out_channels=widths, layers_per_block=2, attention_head_dim=heads,
      cross_attention_dim=TEXT_WIDTH, norm_num_groups=32).train()
  tx_, teps = torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(eps).permute(0, 3, 1, 2)
  tt, tctx = torch.from_numpy(t).long(), torch.from_numpy(ctx)

  def their_loss():
    return F.mse_loss(model(tx_, tt, tctx).sample, teps)

  def attention(call):
    (xs, *rest), mod = call.shapes, call.module
    kv = rest[0] if rest and rest[0] is not None else xs
    q = (xs[0], xs[1], mod.heads, mod.head_dim)
    return q, (kv[0], kv[1], mod.heads, mod.head_dim), False, mod.heads

  ours = Side(loss, params, {
      "ResnetBlock2D": "resnet block", "Transformer2D": "transformer block",
      "Conv": "conv", "UpsampleConv": "upsample conv", "GroupNorm": "GroupNorm",
      "LayerNorm": "LayerNorm", "Dense": "linear", "CrossAttention": "attention",
      "FeedForward": "feed-forward (GEGLU)"}, tuple(map(jnp.asarray, (x, t, ctx, eps))))
  theirs = Side(their_loss, model, {
      "ResnetBlock2D": "resnet block", "Transformer2DModel": "transformer block",
      "Conv2d": "conv", "Upsample2D": "upsample conv", "GroupNorm": "GroupNorm",
      "LayerNorm": "LayerNorm", "Linear": "linear", "Attention": "attention",
      "FeedForward": "feed-forward (GEGLU)", "name:.*upsamplers\\.0\\.conv$": ""})
  n = sum(a.size for a in jax.tree.leaves(params))
  return Profile(ours, theirs, optim("adamw", 1e-4, 0.01, 1.0),
                 torch_adamw(model, 1e-4, 0.01), 1.0, dict(xla.CONVNET_CPU), attention,
                 meta={"widths": widths, "heads": heads, "latents": (b, s, s, LATENT_CHANNELS),
                       "text": (b, TEXT_TOKENS, TEXT_WIDTH), "our_params": n,
                       "their_params": sum(p.numel() for p in model.parameters())})


def llama(args) -> Profile:
  import llama as peer
  from transformers.integrations.sdpa_attention import use_gqa_in_sdpa

  from gen.lm import hf_llama
  from gen.lm import steps as lm_steps
  from gen.lm.data import token_spec

  shape = peer.shape(argparse.Namespace(
      vocab=49152, width=576, mlp=1536, layers=args.layers, heads=9, kv_heads=3,
      context=args.seq))
  config = hf_llama.workdir_config(shape, args.seq)
  spec = token_spec(args.seq, vocab_size=shape["vocab_size"])
  net = lm_steps.parts(config, spec)
  b, s, v = args.batch, args.seq, shape["vocab_size"]
  tokens = np.random.default_rng(0).integers(0, v, (b, s + 1)).astype(np.int32)
  params = jax.jit(net.init)(jax.random.key(0), tokens[:1, :-1])["params"]

  def loss(p, tokens):
    return jnp.mean(lm_steps.token_nll(net, p, tokens))

  model = peer.theirs(shape).train()
  tt = torch.from_numpy(tokens).long()

  def their_loss():
    logits = model(input_ids=tt[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.reshape(-1, v), tt[:, 1:].reshape(-1))

  def attention(call):
    (xs, *_), mod = call.shapes, call.module
    q = (xs[0], xs[1], mod.num_heads, mod.head_dim)
    return q, (xs[0], xs[1], mod.num_kv_heads, mod.head_dim), True, mod.num_kv_heads

  def head_loss():
    """The tied output layer and the cross-entropy: [B * S, width] -> mean NLL."""
    n, w = b * s, shape["hidden_size"]
    rng = np.random.default_rng(1)
    h, emb = rng.standard_normal((n, w), np.float32), rng.standard_normal((v, w), np.float32)
    emb *= 0.02
    y = tokens[:, 1:].reshape(-1)

    def ours(h, emb):
      logits = (h @ emb.T).astype(jnp.float32)
      return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
          logits, y[:, None], -1)[:, 0])

    ty = torch.from_numpy(y).long()
    return [("head + cross-entropy", 1, ours, (h, emb),
             lambda h, e: F.cross_entropy(F.linear(h, e), ty), (h, emb))]

  ours = Side(loss, params, {
      "Block": "decoder layer", "Attention": "attention", "MLP": "MLP (SwiGLU)",
      "RMSNorm": "RMSNorm", "Dense": "linear", "DenseGeneral": "linear", "Embed": "embedding"},
      (jnp.asarray(tokens),))
  theirs = Side(their_loss, model, {
      "LlamaDecoderLayer": "decoder layer", "LlamaAttention": "attention",
      "LlamaMLP": "MLP (SwiGLU)", "LlamaRMSNorm": "RMSNorm", "Linear": "linear",
      "Embedding": "embedding", "name:^lm_head$": ""})
  n = sum(x.size for x in jax.tree.leaves(params))
  prof = Profile(ours, theirs, optim("adamw", 3e-4, 0.1, 1.0), torch_adamw(model, 3e-4, 0.1),
                 1.0, {}, attention, extra=head_loss,
                 meta={"shape": {k: shape[k] for k in ("num_hidden_layers", "hidden_size",
                                                       "num_attention_heads",
                                                       "num_key_value_heads",
                                                       "intermediate_size", "vocab_size")},
                       "tokens": (b, s), "our_params": n,
                       "their_params": sum(p.numel() for p in model.parameters())})
  prof.meta["gqa_in_sdpa"] = use_gqa_in_sdpa(None, torch.zeros(1, 3, 1, 64),
                                              torch.zeros(1, 3, 1, 64))
  return prof


MODELS = {"sd-unet": sd_unet, "llama": llama}


# ------------------------------------------------------------------------------ phases


def phases(p: Profile, repeats: int) -> list[dict]:
  """The loss, its gradient, the whole step and the update, ours and theirs in turns."""
  o = p.options
  params, data = p.ours.params, p.ours.data
  fwd = xla.jit(p.ours.loss, o).lower(params, *data).compile()
  fb = xla.jit(jax.value_and_grad(p.ours.loss), o).lower(params, *data).compile()

  def step_fn(state, *data):
    return state.apply_gradients(jax.grad(p.ours.loss)(state.params, *data))

  def update_fn(state, grads):
    return state.apply_gradients(grads)

  copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t))
  state = [TrainState.create(copy(params), p.tx)]
  step = xla.jit(step_fn, o, donate_argnums=0).lower(state[0], *data).compile()
  grads = fb(params, *data)[1]
  update = xla.jit(update_fn, o, donate_argnums=0).lower(state[0], grads).compile()

  def run_step():
    state[0] = step(state[0], *data)
    return state[0]

  def run_update():
    state[0] = update(state[0], grads)
    return state[0]

  model, opt = p.theirs.params, p.opt
  params_t = [q for q in model.parameters() if q.requires_grad]

  def t_fwd():
    p.theirs.loss()

  def t_fb():
    opt.zero_grad(set_to_none=True)
    p.theirs.loss().backward()

  def t_update():
    if p.clip > 0:
      torch.nn.utils.clip_grad_norm_(params_t, p.clip)
    opt.step()

  def t_step():
    t_fb()
    t_update()

  t = compare.alternate({"ours forward": lambda: fwd(params, *data), "theirs forward": t_fwd,
                         "ours forward + backward": lambda: fb(params, *data),
                         "theirs forward + backward": t_fb,
                         "ours step": run_step, "theirs step": t_step,
                         "ours update": run_update, "theirs update": t_update}, repeats)
  return [{"phase": k, "ours_ms": 1e3 * t[f"ours {k}"], "theirs_ms": 1e3 * t[f"theirs {k}"]}
          for k in ("forward", "forward + backward", "step", "update")]


# ------------------------------------------------------------------------------ pieces


@dataclasses.dataclass
class Call:
  kind: str
  module: object  # ours: an unbound copy; theirs: the module itself
  shapes: list  # per positional argument: a shape, or None / a Python value
  args: tuple
  kwargs: dict
  method: str = "__call__"


def _field_key(module) -> tuple:
  plain = (int, float, str, bool, tuple, type(None))
  return tuple((f.name, getattr(module, f.name)) for f in dataclasses.fields(module)
               if f.name not in ("parent", "name") and isinstance(getattr(module, f.name), plain))


def record_ours(side: Side) -> dict[tuple, list]:
  """{signature: [count, Call]} of every layer call of a kind `side.kinds` names."""
  import flax.linen as nn

  seen: dict[tuple, list] = {}

  def rec(next_fun, args, kwargs, context):
    kind = side.kinds.get(type(context.module).__name__)
    if kind and context.method_name == "__call__":
      shapes = [tuple(a.shape) if hasattr(a, "shape") else a for a in args]
      dtypes = [str(a.dtype) if hasattr(a, "dtype") else None for a in args]
      key = (kind, type(context.module).__name__, _field_key(context.module), repr(shapes),
             repr(dtypes), repr(sorted(kwargs.items())))
      if key not in seen:
        abstract = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) if hasattr(a, "shape") else a
                         for a in args)
        seen[key] = [0, Call(kind, context.module.clone(parent=None), shapes, abstract,
                             dict(kwargs))]
      seen[key][0] += 1
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(rec):  # (A new function each time: jax's cache skips no trace.)
    jax.eval_shape(lambda *a: side.loss(*a), side.params, *side.data)
  return seen


def record_theirs(side: Side) -> dict[tuple, list]:
  model = side.params
  seen: dict[tuple, list] = {}
  handles = []

  def kind_of(name, module):
    for k, v in side.kinds.items():
      if k.startswith("name:") and re.search(k[5:], name):
        return v
    return side.kinds.get(type(module).__name__)

  def hook(name, kind):
    def pre(module, args, kwargs):
      shapes = [tuple(a.shape) if torch.is_tensor(a) else None for a in args]
      kw = {k: (tuple(v.shape) if torch.is_tensor(v) else repr(v)) for k, v in kwargs.items()}
      key = (kind, type(module).__name__, module.extra_repr(), repr(shapes), repr(sorted(
          kw.items())))
      if key not in seen:
        keep = lambda a: a.detach().clone() if torch.is_tensor(a) else a  # noqa: E731
        seen[key] = [0, Call(kind, module, shapes, tuple(keep(a) for a in args),
                             {k: keep(v) for k, v in kwargs.items()})]
      seen[key][0] += 1
    return pre

  for name, module in model.named_modules():
    kind = kind_of(name, module)
    if kind:
      handles.append(module.register_forward_pre_hook(hook(name, kind), with_kwargs=True))
  try:
    with torch.no_grad():
      side.loss()
  finally:
    for h in handles:
      h.remove()
  return seen


def _concrete(args, kind_bound: int = 0):
  """Random arrays for a call's abstract arguments (integers: 0, 1, 2... wrapped)."""
  rng = np.random.default_rng(0)
  out = []
  for a in args:
    if isinstance(a, jax.ShapeDtypeStruct):
      if jnp.issubdtype(a.dtype, jnp.integer):
        n = int(np.prod(a.shape))
        v = np.arange(n) % (kind_bound or max(n, 1))
        out.append(jnp.asarray(v.reshape(a.shape), a.dtype))
      else:
        out.append(jnp.asarray(rng.standard_normal(a.shape), a.dtype))
    else:
      out.append(a)
  return out


def our_programs(call: Call, options: dict):
  """(forward, forward + backward) of one recorded layer call, compiled, ready to run."""
  mod = call.module
  args = _concrete(call.args, getattr(mod, "num_embeddings", 0))
  floats = [i for i, a in enumerate(args)
            if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating)]
  params = mod.init(jax.random.key(0), *args, **call.kwargs).get("params", {})

  def apply(p, fl):
    full = list(args)
    for i, v in zip(floats, fl, strict=True):
      full[i] = v
    return mod.apply({"params": p}, *full, **call.kwargs)

  def fb(p, fl):
    out, vjp = jax.vjp(apply, p, fl)
    return vjp(jax.tree.map(jnp.ones_like, out))

  fl = [args[i] for i in floats]
  f = xla.jit(apply, options).lower(params, fl).compile()
  g = xla.jit(fb, options).lower(params, fl).compile()
  return (lambda: f(params, fl)), (lambda: g(params, fl))


def _tensors(out):
  if torch.is_tensor(out):
    return [out] if out.requires_grad else []
  if isinstance(out, dict):
    out = list(out.values())
  if isinstance(out, (list, tuple)):
    return [t for o in out for t in _tensors(o)]
  return []


def their_programs(fwd: Callable, args: tuple, kwargs: dict | None = None, module=None):
  """(forward, forward + backward) of `fwd(*args, **kwargs)` with autograd on."""
  def leaf(a):
    return a.detach().requires_grad_(a.is_floating_point()) if torch.is_tensor(a) else a

  args = tuple(leaf(a) for a in args)
  kwargs = {k: leaf(v) for k, v in (kwargs or {}).items()}

  def forward():
    fwd(*args, **kwargs)

  def both():
    if module is not None:
      module.zero_grad(set_to_none=True)
    outs = _tensors(fwd(*args, **kwargs))
    torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

  return forward, both


def attention_pieces(p: Profile, ours: dict) -> list:
  """The attention core at each recorded attention call's shapes, ours and theirs."""
  from transformers.integrations.sdpa_attention import use_gqa_in_sdpa

  shapes: dict[tuple, int] = {}
  for count, call in ours.values():
    if call.kind == "attention":
      key = p.attention(call)
      shapes[key] = shapes.get(key, 0) + count
  pieces = []
  for (q, kv, causal, kv_heads), count in shapes.items():
    rng = np.random.default_rng(0)
    arr = lambda s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    qa, ka, va = arr(q), arr(kv), arr(kv)

    def ours_core(q, k, v, causal=causal):
      return gen_attention.dot_product_attention(q, k, v, is_causal=causal)

    tq, tk, tv = (torch.from_numpy(a).transpose(1, 2) for a in (qa, ka, va))
    gqa = q[2] != kv_heads
    if gqa and not use_gqa_in_sdpa(None, tk, tv):
      def theirs_core(q, k, v, causal=causal, rep=q[2] // kv_heads):
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    else:
      def theirs_core(q, k, v, causal=causal, gqa=gqa):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    pieces.append(("attention core", count, ours_core, (qa, ka, va), theirs_core, (tq, tk, tv)))
  return pieces


def function_programs(fn, args, options):
  args = [jnp.asarray(a) for a in args]

  def fb(*a):
    out, vjp = jax.vjp(fn, *a)
    return vjp(jnp.ones_like(out))

  f = xla.jit(fn, options).lower(*args).compile()
  g = xla.jit(fb, options).lower(*args).compile()
  return (lambda: f(*args)), (lambda: g(*args))


def _shapes(call: Call) -> list:
  """The shapes of a recorded call's array arguments, positional then keyword."""
  values = list(call.args) + list(call.kwargs.values())
  return [tuple(a.shape) for a in values if hasattr(a, "shape")]


def pieces(p: Profile, repeats: int) -> tuple[list[dict], list[dict]]:
  """Per kind of layer: calls, distinct shapes and summed milliseconds, in turns; and each
  distinct call's milliseconds (per call)."""
  ours, theirs = record_ours(p.ours), record_theirs(p.theirs)
  totals: dict[str, dict] = {}
  detail: list[dict] = []

  def add(kind, side, count, shapes, t_fwd, t_fb):
    row = totals.setdefault(kind, {"kind": kind})
    row[f"{side}_calls"] = row.get(f"{side}_calls", 0) + count
    row[f"{side}_shapes"] = row.get(f"{side}_shapes", 0) + 1
    row[f"{side}_forward_ms"] = row.get(f"{side}_forward_ms", 0.0) + 1e3 * count * t_fwd
    row[f"{side}_forward_backward_ms"] = (row.get(f"{side}_forward_backward_ms", 0.0)
                                          + 1e3 * count * t_fb)
    detail.append({"kind": kind, "side": side, "calls": count, "shapes": shapes,
                   "forward_ms": 1e3 * t_fwd, "forward_backward_ms": 1e3 * t_fb})

  # One kind at a time, ours and theirs in turns, each distinct call once.
  kinds = list(dict.fromkeys([c.kind for _, c in ours.values()]
                             + [c.kind for _, c in theirs.values()]))
  for kind in kinds:
    runs, calls = {}, {}
    for i, (count, call) in enumerate(c for c in ours.values() if c[1].kind == kind):
      f, g = our_programs(call, p.options)
      runs[f"ours {i} f"], runs[f"ours {i} b"], calls[f"ours {i}"] = f, g, (count, call)
    for i, (count, call) in enumerate(c for c in theirs.values() if c[1].kind == kind):
      f, g = their_programs(call.module, call.args, call.kwargs, call.module)
      runs[f"theirs {i} f"], runs[f"theirs {i} b"], calls[f"theirs {i}"] = f, g, (count, call)
    t = compare.alternate(runs, repeats)
    for key, (count, call) in calls.items():
      add(kind, key.split()[0], count, _shapes(call), t[f"{key} f"], t[f"{key} b"])
  extra = attention_pieces(p, ours) + (p.extra() if p.extra else [])
  for kind, count, fo, ao, ft, at in extra:
    f, g = function_programs(fo, ao, p.options)
    tf, tg = their_programs(ft, tuple(torch.from_numpy(np.asarray(a)) if isinstance(
        a, np.ndarray) else a for a in at))
    t = compare.alternate({"of": f, "ob": g, "tf": tf, "tb": tg}, repeats)
    add(kind, "ours", count, [tuple(np.shape(a)) for a in ao], t["of"], t["ob"])
    add(kind, "theirs", count, [tuple(a.shape) for a in at], t["tf"], t["tb"])
  return list(totals.values()), detail


# ------------------------------------------------------------------------- torch.profiler

# aten op (regex on the name) -> group, first match wins.
OP_GROUPS = (
    (r"conv.*backward", "conv backward"),
    (r"conv", "conv forward"),
    (r"group_norm", "GroupNorm"),
    (r"layer_norm|rms_norm", "LayerNorm / RMSNorm"),
    (r"nll_loss|log_softmax|cross_entropy", "loss"),
    (r"scaled_dot_product|flash_attention|_efficient_attention|softmax", "attention"),
    (r"aten::(addmm|mm|bmm|baddbmm|matmul|linear)$", "matmuls"),
    (r"copy_|clone|contiguous|cat$|aten::to$|_to_copy|index|embedding|gather|scatter",
     "copies, indexing, embedding"),
    (r"silu|gelu|sigmoid|mul|add|sub|div|pow|rsqrt|mean|sum|neg|exp|where|fill|zero|lerp|"
     r"threshold|tanh|cos|sin", "elementwise, reductions"),
)


def torch_ops(p: Profile, top: int = 15) -> dict:
  """Self CPU time per op group over one forward + backward of theirs (after a warm-up)."""
  from torch.profiler import ProfilerActivity, profile

  opt = p.opt

  def fb():
    opt.zero_grad(set_to_none=True)
    p.theirs.loss().backward()

  fb()
  t0 = time.perf_counter()
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    fb()
  wall = time.perf_counter() - t0
  groups: dict[str, float] = {}
  ops = []
  for e in prof.key_averages():
    if not e.key.startswith("aten::"):
      continue
    ms = e.self_cpu_time_total / 1e3
    group = next((g for rx, g in OP_GROUPS if re.search(rx, e.key)), "other")
    groups[group] = groups.get(group, 0.0) + ms
    ops.append((ms, e.key, e.count))
  ops.sort(reverse=True)
  return {"wall_ms_profiled": 1e3 * wall, "groups_ms": dict(sorted(
      groups.items(), key=lambda kv: -kv[1])),
          "top_ops": [{"op": k, "calls": n, "self_ms": ms} for ms, k, n in ops[:top]]}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--model", default="sd-unet", choices=list(MODELS))
  ap.add_argument("--size", type=int, default=32, help="sd-unet: latent height and width")
  ap.add_argument("--widths", default="160,320,640,640", help="sd-unet: block_out_channels")
  ap.add_argument("--heads", type=int, default=4, help="sd-unet: heads per transformer")
  ap.add_argument("--seq", type=int, default=256, help="llama: tokens per row")
  ap.add_argument("--layers", type=int, default=30, help="llama: decoder layers")
  ap.add_argument("--batch", type=int, default=2)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--only", default="phases,pieces,torch_ops")
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args(argv)
  versions = compare.setup(args.threads)
  prof = MODELS[args.model](args)
  out = {"model": args.model, **prof.meta, **measure.device_info(), **versions}
  only = args.only.split(",")
  if "phases" in only:
    out["phases"] = phases(prof, args.repeats)
  if "pieces" in only:
    out["pieces"], out["piece_shapes"] = pieces(prof, args.repeats)
  if "torch_ops" in only:
    out["torch_ops"] = torch_ops(prof)
  measure.report(out, args.json)


if __name__ == "__main__":
  main()
