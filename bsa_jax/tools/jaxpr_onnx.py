"""A jaxpr of lax primitives -> an ONNX model (opset 18), op for op, with symbolic dimensions kept.

Why not a published converter: jax2onnx is the maintained JAX -> ONNX converter, but with jax 0.10.2
and flax 0.12.8 neither 0.13.0 (the newest that installs beside orbax-checkpoint 0.12.8) nor 0.17.1
(which pins orbax-checkpoint < 0.11.37) produced a model onnxruntime 1.32 runs for any of BSA-Net,
U-Net and PraNet: its flax.linen `max_pool` shim rejects a positional window, and at the lax level
4-D `reduce_window_max` became an unsupported 4-D MaxPool, a Concat got a wrong static shape, and a
symbolic batch failed a shape comparison (measured 2026-12, see README "Export").

So we translate the traced program itself: `jax.make_jaxpr` of the model (weights closed over) is
walked equation by equation and each lax primitive becomes the ONNX node(s) computing the same
function. Nested jaxprs (jit, custom_jvp/vjp) are inlined. `jax.image.resize` is already a product
with interpolation matrices at this level, and the ARM's point gathers/scatters map to
GatherND/ScatterND with the same indices, so both are exact by construction, not approximated by
ONNX's Resize. A symbolic dimension (the batch `B` of `jax.export.symbolic_shape`) stays symbolic:
every shape that mentions it is computed in the graph from the input's runtime shape.

Unsupported primitives (or parameter combinations) raise `UnsupportedError` naming the primitive.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.extend as jex
import numpy as np
import onnx
from onnx import helper
from onnx import numpy_helper

OPSET = 18


class UnsupportedError(NotImplementedError):
  """A primitive or parameter combination this converter does not translate."""


def _tensor_type(dtype) -> int:
  return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _is_static(dim) -> bool:
  return isinstance(dim, (int, np.integer))


class _Dim:
  """A symbolic dimension's value in the graph: a 1-element int64 tensor, with + - * // % on it."""

  def __init__(self, graph: "_Graph", name: str):
    self.graph, self.name = graph, name

  def _lift(self, other) -> str:
    return other.name if isinstance(other, _Dim) else self.graph.const(np.array([other], np.int64))

  def _op(self, op: str, a, b) -> "_Dim":
    return _Dim(self.graph, self.graph.node(op, [self._lift(a), self._lift(b)]))

  def __add__(self, o): return self._op("Add", self, o)
  def __radd__(self, o): return self._op("Add", o, self)
  def __sub__(self, o): return self._op("Sub", self, o)
  def __rsub__(self, o): return self._op("Sub", o, self)
  def __mul__(self, o): return self._op("Mul", self, o)
  def __rmul__(self, o): return self._op("Mul", o, self)
  def __neg__(self): return self._op("Sub", 0, self)


class _Graph:
  """ONNX nodes and initializers under construction, with shape tensors for symbolic dimensions."""

  def __init__(self):
    self.nodes: list[onnx.NodeProto] = []
    self.initializers: list[onnx.TensorProto] = []
    self._count = 0
    self._consts: dict[tuple, str] = {}
    self._dims: dict[str, _Dim] = {}  # symbol or expression text -> its value in the graph

  def fresh(self, hint: str) -> str:
    self._count += 1
    return f"{hint}_{self._count}"

  def const(self, value: np.ndarray, hint: str = "c") -> str:
    """An initializer holding `value` (small ones deduplicated)."""
    value = np.asarray(value)
    key = None
    if value.size <= 16:
      key = (value.dtype.str, value.shape, value.tobytes())
      if key in self._consts:
        return self._consts[key]
    name = self.fresh(hint)
    self.initializers.append(numpy_helper.from_array(value, name))
    if key is not None:
      self._consts[key] = name
    return name

  def node(self, op: str, inputs: Sequence[str], num_outputs: int = 1, **attrs):
    """Appends one node; returns its output name (or the list of names if `num_outputs` > 1)."""
    outputs = [self.fresh(op.lower()) for _ in range(num_outputs)]
    self.nodes.append(helper.make_node(op, list(inputs), outputs, **attrs))
    return outputs[0] if num_outputs == 1 else outputs

  # Symbolic dimensions --------------------------------------------------------------------------

  def bind_symbol(self, symbol: str, tensor: str, axis: int) -> None:
    """Records that `symbol` is the size of `tensor`'s `axis` (a graph input)."""
    if symbol not in self._dims:
      shape = self.node("Shape", [tensor], start=axis, end=axis + 1)
      self._dims[symbol] = _Dim(self, shape)

  def dim(self, dim) -> str:
    """A 1-element int64 tensor holding `dim` (an int or a symbolic expression such as `4*B + 1`)."""
    if _is_static(dim):
      return self.const(np.array([int(dim)], np.int64))
    text = str(dim)
    if text not in self._dims:
      namespace = {"__builtins__": {}, **{k: v for k, v in self._dims.items() if k.isidentifier()}}
      unknown = set(re.findall(r"[A-Za-z_]\w*", text)) - set(namespace)
      if unknown:
        raise UnsupportedError(f"dimension {text!r} uses {sorted(unknown)}, which is neither an "
                               "input dimension nor + - * of one")
      self._dims[text] = eval(text, namespace)  # pylint: disable=eval-used  # text is jax's own
    return self._dims[text].name

  def shape(self, dims: Sequence) -> str:
    """A 1-D int64 shape tensor for `dims` (constant unless a dimension is symbolic)."""
    if all(_is_static(d) for d in dims):
      return self.const(np.array([int(d) for d in dims], np.int64))
    return self.node("Concat", [self.dim(d) for d in dims], axis=0)


# ----------------------------------------------------------------------------------------------------
# Primitive translations: each takes (graph, eqn, input names) and returns the output names.

_UNARY = {"neg": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "floor": "Floor",
          "ceil": "Ceil", "sign": "Sign", "logistic": "Sigmoid", "tanh": "Tanh", "erf": "Erf",
          "sin": "Sin", "cos": "Cos"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
           "pow": "Pow", "eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
           "ge": "GreaterOrEqual"}
_LOGICAL = {"and": ("And", "BitwiseAnd"), "or": ("Or", "BitwiseOr"), "xor": ("Xor", "BitwiseXor")}
_IDENTITY = ("copy", "copy_p", "stop_gradient", "device_put", "sharding_constraint",
             "optimization_barrier")
_INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
           "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
           "custom_vjp_call_jaxpr": "fun_jaxpr", "remat": "jaxpr", "checkpoint": "jaxpr"}
_REDUCE = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin",
           "reduce_prod": "ReduceProd"}


def _aval(atom):
  return atom.aval


def _unary(g: _Graph, eqn, ins):
  return [g.node(_UNARY[eqn.primitive.name], ins)]


def _binary(g: _Graph, eqn, ins):
  return [g.node(_BINARY[eqn.primitive.name], ins)]


def _ne(g: _Graph, eqn, ins):
  return [g.node("Not", [g.node("Equal", ins)])]


def _logical(g: _Graph, eqn, ins):
  boolean, bitwise = _LOGICAL[eqn.primitive.name]
  return [g.node(boolean if _aval(eqn.invars[0]).dtype == np.bool_ else bitwise, ins)]


def _not(g: _Graph, eqn, ins):
  return [g.node("Not" if _aval(eqn.invars[0]).dtype == np.bool_ else "BitwiseNot", ins)]


def _rem(g: _Graph, eqn, ins):  # lax.rem is C's remainder: the sign of the dividend
  return [g.node("Mod", ins, fmod=1)]


def _rsqrt(g: _Graph, eqn, ins):
  return [g.node("Reciprocal", [g.node("Sqrt", ins)])]


def _square(g: _Graph, eqn, ins):
  return [g.node("Mul", [ins[0], ins[0]])]


def _integer_pow(g: _Graph, eqn, ins):
  y = eqn.params["y"]
  if y < 1:
    raise UnsupportedError(f"integer_pow with exponent {y}")
  out = ins[0]
  for _ in range(y - 1):
    out = g.node("Mul", [out, ins[0]])
  return [out]


def _erfc(g: _Graph, eqn, ins):
  one = g.const(np.array(1, _aval(eqn.invars[0]).dtype))
  return [g.node("Sub", [one, g.node("Erf", ins)])]


def _identity(g: _Graph, eqn, ins):
  return [g.node("Identity", [x]) for x in ins]


def _convert(g: _Graph, eqn, ins):
  return [g.node("Cast", ins, to=_tensor_type(eqn.params["new_dtype"]))]


def _clamp(g: _Graph, eqn, ins):  # clamp(lo, x, hi)
  lo, x, hi = ins
  return [g.node("Max", [g.node("Min", [x, hi]), lo])]


def _select_n(g: _Graph, eqn, ins):
  """select_n(which, *cases): case[which]; `which` is bool (2 cases) or an int index."""
  which, cases = ins[0], ins[1:]
  if _aval(eqn.invars[0]).dtype == np.bool_:
    return [g.node("Where", [which, cases[1], cases[0]])]
  index_dtype = _aval(eqn.invars[0]).dtype
  out = cases[0]
  for i, case in enumerate(cases[1:], start=1):
    is_i = g.node("Equal", [which, g.const(np.array(i, index_dtype))])
    out = g.node("Where", [is_i, case, out])
  return [out]


def _broadcast_in_dim(g: _Graph, eqn, ins):
  shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
  x = ins[0]
  missing = [d for d in range(len(shape)) if d not in dims]
  if missing:  # broadcast_dimensions increase, so the kept axes land on `dims`
    x = g.node("Unsqueeze", [x, g.const(np.array(missing, np.int64))])
  in_shape = list(_aval(eqn.invars[0]).shape)
  placed = [1] * len(shape)
  for src, dst in enumerate(dims):
    placed[dst] = in_shape[src]
  if placed == list(shape):
    return [x if missing else g.node("Identity", [x])]
  return [g.node("Expand", [x, g.shape(shape)])]


def _reshape(g: _Graph, eqn, ins):
  if eqn.params.get("dimensions") is not None:
    raise UnsupportedError("reshape with `dimensions`")
  return [g.node("Reshape", [ins[0], g.shape(eqn.params["new_sizes"])])]


def _squeeze(g: _Graph, eqn, ins):
  return [g.node("Squeeze", [ins[0], g.const(np.array(eqn.params["dimensions"], np.int64))])]


def _expand_dims(g: _Graph, eqn, ins):
  return [g.node("Unsqueeze", [ins[0], g.const(np.array(eqn.params["dimensions"], np.int64))])]


def _transpose(g: _Graph, eqn, ins):
  return [g.node("Transpose", ins, perm=[int(p) for p in eqn.params["permutation"]])]


def _concatenate(g: _Graph, eqn, ins):
  return [g.node("Concat", ins, axis=int(eqn.params["dimension"]))]


def _stack(g: _Graph, eqn, ins):
  axis = g.const(np.array([eqn.params["axis"]], np.int64))
  return [g.node("Concat", [g.node("Unsqueeze", [x, axis]) for x in ins],
                 axis=int(eqn.params["axis"]))]


def _split(g: _Graph, eqn, ins):
  sizes = [int(s) for s in eqn.params["sizes"]]
  outs = g.node("Split", [ins[0], g.const(np.array(sizes, np.int64))], num_outputs=len(sizes),
                axis=int(eqn.params["axis"]))
  return outs if len(sizes) > 1 else [outs]


def _slice(g: _Graph, eqn, ins):
  starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
  strides = eqn.params["strides"] or (1,) * len(starts)
  axes = list(range(len(starts)))
  return [g.node("Slice", [ins[0], g.shape(starts), g.shape(limits),
                           g.const(np.array(axes, np.int64)), g.shape(strides)])]


def _rev(g: _Graph, eqn, ins):
  axes = list(eqn.params["dimensions"])
  n = len(axes)
  return [g.node("Slice", [ins[0], g.const(np.full(n, -1, np.int64)),
                           g.const(np.full(n, np.iinfo(np.int64).min, np.int64)),
                           g.const(np.array(axes, np.int64)), g.const(np.full(n, -1, np.int64))])]


def _pad(g: _Graph, eqn, ins):
  """lax.pad without interior padding: Pad for the positive edges, Slice for the negative ones."""
  x, value = ins
  config = eqn.params["padding_config"]
  if any(int(interior) for _, _, interior in config):
    raise UnsupportedError("pad with interior padding")
  lo = [max(int(l), 0) for l, _, _ in config]
  hi = [max(int(h), 0) for _, h, _ in config]
  if any(lo + hi):
    x = g.node("Pad", [x, g.const(np.array(lo + hi, np.int64)), value], mode="constant")
  cut_lo = [max(-int(l), 0) for l, _, _ in config]
  cut_hi = [max(-int(h), 0) for _, h, _ in config]
  if any(cut_lo + cut_hi):
    ends = [(-c if c else np.iinfo(np.int64).max) for c in cut_hi]
    x = g.node("Slice", [x, g.const(np.array(cut_lo, np.int64)), g.const(np.array(ends, np.int64))])
  elif not any(lo + hi):
    x = g.node("Identity", [x])
  return [x]


def _iota(g: _Graph, eqn, ins):
  """lax.iota: arange along `dimension`, broadcast to `shape`."""
  dtype, shape, dim = np.dtype(eqn.params["dtype"]), eqn.params["shape"], eqn.params["dimension"]
  if all(_is_static(d) for d in shape):
    line = np.arange(shape[dim]).astype(dtype)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return [g.const(np.broadcast_to(line.reshape(view), shape).copy(), "iota")]
  n = g.node("Squeeze", [g.dim(shape[dim])])
  line = g.node("Range", [g.const(np.array(0, np.int64)), n, g.const(np.array(1, np.int64))])
  view = [1] * len(shape)
  view[dim] = -1
  line = g.node("Reshape", [g.node("Cast", [line], to=_tensor_type(dtype)),
                            g.const(np.array(view, np.int64))])
  return [g.node("Expand", [line, g.shape(shape)])]


def _reduce(g: _Graph, eqn, ins):
  axes = list(eqn.params["axes"])
  if not axes:
    return [g.node("Identity", ins)]
  return [g.node(_REDUCE[eqn.primitive.name], [ins[0], g.const(np.array(axes, np.int64))],
                 keepdims=0)]


def _argminmax(g: _Graph, eqn, ins):
  (axis,) = eqn.params["axes"]
  op = "ArgMax" if eqn.primitive.name == "argmax" else "ArgMin"
  index = g.node(op, ins, axis=int(axis), keepdims=0, select_last_index=0)
  return [g.node("Cast", [index], to=_tensor_type(eqn.params["index_dtype"]))]


def _top_k(g: _Graph, eqn, ins):
  """lax.top_k along `axis` (the last one by default); ties keep the lower index in both."""
  rank = len(_aval(eqn.invars[0]).shape)
  axis = int(eqn.params.get("axis", rank - 1))
  k = g.const(np.array([eqn.params["k"]], np.int64))
  values, index = g.node("TopK", [ins[0], k], num_outputs=2, axis=axis, largest=1, sorted=1)
  index_dtype = _aval(eqn.outvars[1]).dtype
  return [values, g.node("Cast", [index], to=_tensor_type(index_dtype))]


def _dot_general(g: _Graph, eqn, ins):
  """dot_general as an Einsum: batch dims, then lhs free dims, then rhs free dims."""
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  lrank, rrank = (len(_aval(v).shape) for v in eqn.invars)
  letters = iter("abcdefghijklmnopqrstuvwxyz")
  lhs, rhs = [None] * lrank, [None] * rrank
  for l, r in list(zip(lb, rb)) + list(zip(lc, rc)):
    lhs[l] = rhs[r] = next(letters)
  out = [lhs[l] for l in lb]
  for i in range(lrank):
    if lhs[i] is None:
      lhs[i] = next(letters)
      out.append(lhs[i])
  for i in range(rrank):
    if rhs[i] is None:
      rhs[i] = next(letters)
      out.append(rhs[i])
  equation = f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"
  y = g.node("Einsum", ins, equation=equation)
  out_dtype = _aval(eqn.outvars[0]).dtype
  if out_dtype != _aval(eqn.invars[0]).dtype:
    y = g.node("Cast", [y], to=_tensor_type(out_dtype))
  return [y]


def _dilate(g: _Graph, x: str, sizes: Sequence[int], dilation: Sequence[int]) -> str:
  """Inserts d-1 zeros between the elements of each spatial axis of NC... `x` (lhs_dilation).

  `sizes` are the static spatial sizes of `x`; N and C may be symbolic (Reshape's 0 copies them).
  """
  sizes = [int(s) for s in sizes]
  rank = 2 + len(sizes)
  for axis, d in enumerate(int(d) for d in dilation):
    if d == 1:
      continue
    a = 2 + axis
    x = g.node("Unsqueeze", [x, g.const(np.array([a + 1], np.int64))])  # (.., L, 1, ..)
    pads = [0] * (2 * (rank + 1))
    pads[rank + 1 + a + 1] = d - 1
    x = g.node("Pad", [x, g.const(np.array(pads, np.int64))], mode="constant")  # (.., L, d, ..)
    merged = [0, 0] + sizes[:axis] + [sizes[axis] * d] + sizes[axis + 1:]
    x = g.node("Reshape", [x, g.const(np.array(merged, np.int64))])  # (.., L·d, ..)
    x = g.node("Slice", [x, g.const(np.array([0], np.int64)), g.const(np.array([-(d - 1)], np.int64)),
                         g.const(np.array([a], np.int64))])  # drop the trailing zeros
    sizes[axis] = (sizes[axis] - 1) * d + 1
  return x


def _conv(g: _Graph, eqn, ins):
  """conv_general_dilated via NC... Conv (transposes around it; lhs_dilation by zero insertion)."""
  p = eqn.params
  if p["batch_group_count"] != 1:
    raise UnsupportedError("conv_general_dilated with batch_group_count > 1")
  dn = p["dimension_numbers"]
  x = g.node("Transpose", [ins[0]], perm=[int(i) for i in dn.lhs_spec])
  w = g.node("Transpose", [ins[1]], perm=[int(i) for i in dn.rhs_spec])
  lhs_shape = _aval(eqn.invars[0]).shape
  x = _dilate(g, x, [lhs_shape[a] for a in dn.lhs_spec[2:]], p["lhs_dilation"])
  pads = [(int(lo), int(hi)) for lo, hi in p["padding"]]
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    starts = [max(-lo, 0) for lo, _ in pads]
    ends = [(-max(-hi, 0) or np.iinfo(np.int64).max) for _, hi in pads]
    axes = list(range(2, 2 + len(pads)))
    x = g.node("Slice", [x, g.const(np.array(starts, np.int64)), g.const(np.array(ends, np.int64)),
                         g.const(np.array(axes, np.int64))])
    pads = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
  y = g.node("Conv", [x, w], strides=[int(s) for s in p["window_strides"]],
             dilations=[int(d) for d in p["rhs_dilation"]],
             pads=[lo for lo, _ in pads] + [hi for _, hi in pads],
             group=int(p["feature_group_count"]))
  return [g.node("Transpose", [y], perm=[int(i) for i in np.argsort(dn.out_spec)])]


def _reduce_window(g: _Graph, eqn, ins):
  """reduce_window_{max,sum} over at most 3 axes: MaxPool / AveragePool·size on NC... layout."""
  p = eqn.params
  rank = len(p["window_dimensions"])
  if any(int(d) != 1 for d in p["base_dilation"]):
    raise UnsupportedError(f"{eqn.primitive.name} with base dilation")
  pooled = [a for a in range(rank) if int(p["window_dimensions"][a]) != 1 or
            int(p["window_strides"][a]) != 1 or tuple(p["padding"][a]) != (0, 0)]
  kept = [a for a in range(rank) if a not in pooled]
  if len(kept) != 2 or not 1 <= len(pooled) <= 3:
    raise UnsupportedError(f"{eqn.primitive.name} over axes {pooled} of a rank-{rank} array")
  perm = kept + pooled
  x = g.node("Transpose", ins, perm=perm)
  attrs = dict(kernel_shape=[int(p["window_dimensions"][a]) for a in pooled],
               strides=[int(p["window_strides"][a]) for a in pooled],
               pads=[int(p["padding"][a][0]) for a in pooled] +
               [int(p["padding"][a][1]) for a in pooled])
  dilations = [int(p["window_dilation"][a]) for a in pooled]
  if eqn.primitive.name == "reduce_window_max":
    y = g.node("MaxPool", [x], dilations=dilations, **attrs)
  else:
    if any(d != 1 for d in dilations):
      raise UnsupportedError("reduce_window_sum with window dilation")
    size = int(np.prod(attrs["kernel_shape"]))
    mean = g.node("AveragePool", [x], count_include_pad=1, **attrs)
    y = g.node("Mul", [mean, g.const(np.array(size, _aval(eqn.invars[0]).dtype))])
  return [g.node("Transpose", [y], perm=[int(i) for i in np.argsort(perm)])]


def _fill_value(dtype, fill):
  if fill is not None:
    return np.array(fill, dtype)
  dtype = np.dtype(dtype)
  if np.issubdtype(dtype, np.floating):
    return np.array(np.nan, dtype)
  if dtype == np.bool_:
    return np.array(True)
  return np.array(np.iinfo(dtype).min if np.issubdtype(dtype, np.signedinteger)
                  else np.iinfo(dtype).max, dtype)


def _gather(g: _Graph, eqn, ins):
  """XLA gather of whole slices (each indexed axis collapsed, the others full) as GatherND.

  The operand is transposed to (batching axes, indexed axes, the rest), the indices to (batching
  axes, other index axes, index vector), GatherND(batch_dims = #batching) gathers, and a transpose
  puts the axes where XLA's `offset_dims` say. CLIP clamps the indices; FILL_OR_DROP fills the rows
  whose index is out of bounds with the fill value, as XLA does.
  """
  p = eqn.params
  dn = p["dimension_numbers"]
  operand_shape = _aval(eqn.invars[0]).shape
  index_shape = _aval(eqn.invars[1]).shape
  obd, ibd = [int(a) for a in dn.operand_batching_dims], [int(a) for a in dn.start_indices_batching_dims]
  smap = [int(a) for a in dn.start_index_map]
  if sorted(int(a) for a in dn.collapsed_slice_dims) != sorted(smap):
    raise UnsupportedError(f"gather whose collapsed axes {dn.collapsed_slice_dims} are not its "
                           f"indexed axes {dn.start_index_map}")
  rest = [a for a in range(len(operand_shape)) if a not in obd and a not in smap]
  for a in range(len(operand_shape)):
    want = operand_shape[a] if a in rest else 1
    if not (p["slice_sizes"][a] == want if _is_static(want) else str(p["slice_sizes"][a]) == str(want)):
      raise UnsupportedError(f"gather of partial slices (slice_sizes {p['slice_sizes']})")
  data = g.node("Transpose", [ins[0]], perm=obd + smap + rest)
  index_axes = list(range(len(index_shape) - 1))
  others = [a for a in index_axes if a not in ibd]
  index = g.node("Transpose", [ins[1]], perm=ibd + others + [len(index_shape) - 1])
  index = g.node("Cast", [index], to=onnx.TensorProto.INT64)
  bounds = np.array([operand_shape[a] for a in smap])
  if not all(_is_static(b) for b in bounds):
    raise UnsupportedError("gather along a symbolic axis")
  valid = None
  mode = str(p["mode"])
  if "CLIP" in mode or "FILL_OR_DROP" in mode:
    high = g.const(bounds.astype(np.int64) - 1)
    zero = g.const(np.array(0, np.int64))
    if "FILL_OR_DROP" in mode:
      inside = g.node("And", [g.node("GreaterOrEqual", [index, zero]),
                              g.node("LessOrEqual", [index, high])])
      valid = g.node("ReduceMin", [g.node("Cast", [inside], to=onnx.TensorProto.INT32),
                                   g.const(np.array([-1], np.int64))], keepdims=0)
    index = g.node("Max", [g.node("Min", [index, high]), zero])
  y = g.node("GatherND", [data, index], batch_dims=len(obd))
  # y axes: index batch axes (ibd then others), then `rest`; XLA puts `rest` at offset_dims.
  order = ibd + others
  offset = [int(a) for a in dn.offset_dims]
  source, k_rest, k_batch = [], 0, 0
  for position in range(len(order) + len(rest)):
    if position in offset:
      source.append(len(order) + k_rest)
      k_rest += 1
    else:
      source.append(order.index(index_axes[k_batch]))
      k_batch += 1
  if valid is not None:  # broadcast the per-row validity over the slice axes
    mask = g.node("Cast", [valid], to=onnx.TensorProto.BOOL)
    if rest:
      mask = g.node("Unsqueeze", [mask, g.const(np.arange(len(order), len(order) + len(rest)))])
    fill = g.const(_fill_value(_aval(eqn.outvars[0]).dtype, p.get("fill_value")))
    y = g.node("Where", [mask, y, fill])
  return [g.node("Transpose", [y], perm=source)]


def _scatter(g: _Graph, eqn, ins):
  """XLA scatter (replace) of whole slices as ScatterND, batching axes turned into index columns.

  Indices must be in bounds: an out-of-bounds update, which XLA drops (FILL_OR_DROP), makes
  onnxruntime fail instead of writing elsewhere. The ARM's indices come from top_k, so they are.
  """
  p = eqn.params
  dn = p["dimension_numbers"]
  operand, index, updates = ins
  operand_shape = _aval(eqn.invars[0]).shape
  index_shape = _aval(eqn.invars[1]).shape
  update_rank = len(_aval(eqn.invars[2]).shape)
  obd = [int(a) for a in dn.operand_batching_dims]
  ibd = [int(a) for a in dn.scatter_indices_batching_dims]
  smap = [int(a) for a in dn.scatter_dims_to_operand_dims]
  if sorted(int(a) for a in dn.inserted_window_dims) != sorted(smap):
    raise UnsupportedError("scatter whose inserted axes are not its indexed axes")
  rest = [a for a in range(len(operand_shape)) if a not in obd and a not in smap]
  data = g.node("Transpose", [operand], perm=obd + smap + rest)
  index = g.node("Cast", [index], to=onnx.TensorProto.INT64)
  if obd:  # prepend, per batching axis, the position along the paired index axis
    batch_shape = g.node("Shape", [index], start=0, end=len(index_shape) - 1)
    columns = []
    for axis in ibd:
      n = g.node("Squeeze", [g.dim(index_shape[axis])])
      line = g.node("Range", [g.const(np.array(0, np.int64)), n, g.const(np.array(1, np.int64))])
      view = [1] * (len(index_shape) - 1)
      view[axis] = -1
      line = g.node("Reshape", [line, g.const(np.array(view, np.int64))])
      line = g.node("Expand", [line, batch_shape])
      columns.append(g.node("Unsqueeze", [line, g.const(np.array([-1], np.int64))]))
    index = g.node("Concat", columns + [index], axis=-1)
  window = [int(a) for a in dn.update_window_dims]
  scatter_axes = [a for a in range(update_rank) if a not in window]
  upd = g.node("Transpose", [updates], perm=scatter_axes + window)
  y = g.node("ScatterND", [data, index, upd])
  return [g.node("Transpose", [y], perm=[int(i) for i in np.argsort(obd + smap + rest)])]


_RULES: dict[str, Callable] = {
    **{name: _unary for name in _UNARY}, **{name: _binary for name in _BINARY},
    **{name: _logical for name in _LOGICAL}, **{name: _identity for name in _IDENTITY},
    **{name: _reduce for name in _REDUCE},
    "ne": _ne, "not": _not, "rem": _rem, "rsqrt": _rsqrt, "square": _square,
    "integer_pow": _integer_pow, "erfc": _erfc, "convert_element_type": _convert, "clamp": _clamp,
    "select_n": _select_n, "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape,
    "squeeze": _squeeze, "expand_dims": _expand_dims, "transpose": _transpose,
    "concatenate": _concatenate, "stack": _stack, "split": _split, "slice": _slice, "rev": _rev,
    "pad": _pad, "iota": _iota, "argmax": _argminmax, "argmin": _argminmax, "top_k": _top_k,
    "dot_general": _dot_general, "conv_general_dilated": _conv,
    "reduce_window_max": _reduce_window, "reduce_window_sum": _reduce_window,
    "gather": _gather, "scatter": _scatter,
}


def supported_primitives() -> list[str]:
  return sorted(set(_RULES) | set(_INLINE))


# ----------------------------------------------------------------------------------------------------
# Walking the jaxpr.

def _emit(g: _Graph, jaxpr, consts: Sequence[Any], inputs: Sequence[str]) -> list[str]:
  """Translates `jaxpr` with its constvars bound to `consts` and invars to `inputs`; returns outputs."""
  env: dict[Any, str] = {}
  for var, value in zip(jaxpr.constvars, consts):
    env[var] = g.const(np.asarray(value), "w")
  env.update(zip(jaxpr.invars, inputs))

  def read(atom) -> str:
    if isinstance(atom, jex.core.Literal):
      return g.const(np.asarray(atom.val, dtype=atom.aval.dtype))
    return env[atom]

  for eqn in jaxpr.eqns:
    ins = [read(a) for a in eqn.invars]
    name = eqn.primitive.name
    if name in _INLINE:
      sub = eqn.params[_INLINE[name]]
      inner, inner_consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (sub, ())
      outs = _emit(g, inner, inner_consts, ins)
    elif name in _RULES:
      outs = _RULES[name](g, eqn, ins)
    else:
      raise UnsupportedError(
          f"the lax primitive {name!r} has no ONNX translation in bsa_jax/tools/jaxpr_onnx.py "
          f"(supported: {', '.join(supported_primitives())})")
    for var, out in zip(eqn.outvars, outs):
      env[var] = out
  return [read(v) for v in jaxpr.outvars]


def _value_info(name: str, aval) -> onnx.ValueInfoProto:
  dims = [int(d) if _is_static(d) else str(d) for d in aval.shape]
  return helper.make_tensor_value_info(name, _tensor_type(aval.dtype), dims)


def convert(fn: Callable, specs: Sequence[jax.ShapeDtypeStruct], input_names: Sequence[str],
            output_names: Sequence[str], model_name: str = "model",
            doc: str = "") -> onnx.ModelProto:
  """ONNX model computing `fn(*inputs)` for inputs shaped like `specs` (symbolic dims stay symbolic).

  Args:
    fn: a JAX function of arrays (weights closed over become initializers).
    specs: one `jax.ShapeDtypeStruct` per input; a symbolic dimension (`jax.export.symbolic_shape`)
      becomes a named ONNX dimension.
    input_names, output_names: graph input and output names, in order.
    model_name, doc: the graph's name and doc string.

  Returns:
    A checked `onnx.ModelProto` (opset 18).
  """
  closed = jax.make_jaxpr(fn)(*specs)
  g = _Graph()
  for name, spec in zip(input_names, specs):
    for axis, dim in enumerate(spec.shape):
      if not _is_static(dim) and str(dim).isidentifier():
        g.bind_symbol(str(dim), name, axis)
  outs = _emit(g, closed.jaxpr, closed.consts, list(input_names))
  if len(outs) != len(output_names):
    raise ValueError(f"fn returns {len(outs)} arrays but {len(output_names)} output names were given")
  for out, name in zip(outs, output_names):
    g.nodes.append(helper.make_node("Identity", [out], [name]))
  graph = helper.make_graph(
      g.nodes, model_name,
      [_value_info(n, s) for n, s in zip(input_names, specs)],
      [_value_info(n, v.aval) for n, v in zip(output_names, closed.jaxpr.outvars)],
      initializer=g.initializers, doc_string=doc)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                            producer_name="bsa_jax.tools.jaxpr_onnx")
  model.ir_version = 9  # onnxruntime >= 1.16 reads it
  onnx.checker.check_model(model)
  return model
