"""`jagged.op(graph_text)`: any graph in the canonical text form as a callable on CPU tensors."""

import functools
from typing import Dict, List, Tuple, Union

import torch

from . import _native
from ._native import JaggedInputError
from ._tensors import TORCH_DTYPES, common_device, from_native, to_native


class GraphOp:
    """A graph compiled from its canonical text (see docs/ops.md, "The IR").

    Call it with the graph's inputs (positionally in the graph's input order,
    or by name) and its attributes by name (declared defaults for the
    others). It returns the outputs in the graph's output order: a tensor
    when the graph has one output, else a tuple. The kernels are compiled on
    the first call for each specialization (inner dims, dtypes, `max_len`
    bucket) and cached (in memory and in the kernel cache on disk).

    It runs as the custom op `torch.ops.jagged.run_graph`, whose fake
    implementation gives the outputs' shapes from the graph's types, so it
    works inside `torch.compile(fullgraph=True)` too (rows of a compaction
    are a data-dependent size). It is differentiable with respect to its
    float inputs: the backward is the graph's backward graph, derived by
    reverse-mode autodiff over the IR and compiled by the general path like
    any graph (a node the IR cannot differentiate, such as a gather's table,
    raises when the backward runs).
    """

    def __init__(self, text: str):
        self._graph = _native.CompiledGraph(text)
        self.name: str = self._graph.name
        #: The canonical text of the graph.
        self.text: str = self._graph.text()
        self.inputs: List[Tuple[str, str, List[str]]] = self._graph.inputs()
        self.attrs: List[Tuple[str, str, object]] = self._graph.attrs()
        self.outputs: List[Tuple[str, str, List[str]]] = self._graph.outputs()
        self._input_names = [name for name, _, _ in self.inputs]
        self._attr_names = {name for name, _, _ in self.attrs}
        self._attr_kinds = {name: kind for name, kind, _ in self.attrs}
        self._defaults = {name: default for name, _, default in self.attrs if default is not None}

    def __repr__(self) -> str:
        ins = ", ".join(f"{n}: {d}[{', '.join(dims)}]" for n, d, dims in self.inputs)
        outs = ", ".join(n for n, _, _ in self.outputs)
        return f"jagged.op(graph {self.name}({ins}) -> ({outs}))"

    def __call__(self, *args: torch.Tensor, **kwargs: object) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        where = f"op({self.name})"
        if len(args) > len(self._input_names):
            raise TypeError(f"jagged.{where}: {len(args)} positional inputs, the graph has {len(self._input_names)}")
        tensors: Dict[str, object] = dict(zip(self._input_names, args))
        attrs: Dict[str, object] = {}
        for key, value in kwargs.items():
            if key in self._attr_names and key not in self._input_names:
                attrs[key] = value
            elif key in self._input_names:
                if key in tensors:
                    raise TypeError(f"jagged.{where}: input `{key}` given twice")
                tensors[key] = value
            else:
                raise TypeError(
                    f"jagged.{where}: unknown argument `{key}` (inputs: {', '.join(self._input_names)}; "
                    f"attributes: {', '.join(sorted(self._attr_names)) or 'none'})"
                )
        missing = [n for n in self._input_names if n not in tensors]
        if missing:
            raise TypeError(f"jagged.{where}: missing input(s) {', '.join('`' + m + '`' for m in missing)}")
        for name in self._input_names:
            if not isinstance(tensors[name], torch.Tensor):
                raise TypeError(f"jagged.{where}: input `{name}` must be a torch.Tensor")
        names = sorted(k for k, v in attrs.items() if v is not None)
        for k in names:
            if isinstance(attrs[k], bool) or not isinstance(attrs[k], (int, float)):
                raise JaggedInputError(f"jagged.{where}: attribute `{k}` must be a number, got {attrs[k]!r}")
        encoded = ",".join(f"{k}={attrs[k]!r}" for k in names)
        outs = torch.ops.jagged.run_graph(self.text, [tensors[n] for n in self._input_names], encoded)
        return outs[0] if len(outs) == 1 else tuple(outs)

    @functools.cached_property
    def _float_inputs(self) -> Tuple[str, ...]:
        return tuple(name for name, dtype, _ in self.inputs if TORCH_DTYPES[dtype].is_floating_point)

    @functools.cached_property
    def _float_outputs(self) -> List[int]:
        return [k for k, (_, dtype, _) in enumerate(self.outputs) if dtype != "seqs" and TORCH_DTYPES[dtype].is_floating_point]

    @functools.cached_property
    def _backward(self) -> "GraphOp":
        """The backward graph for every float input (see `run_graph`'s autograd)."""
        return op(self._graph.backward(list(self._float_inputs)))

    def _run(self, inputs: List[torch.Tensor], attrs: Dict[str, object]) -> List[torch.Tensor]:
        where = f"op({self.name})"
        tensors = dict(zip(self._input_names, inputs))
        device = common_device(where, tensors)
        if device.type == "cuda":
            from . import _cuda

            return _cuda.run_graph(where, self._graph, tensors, attrs, device)
        native = [to_native(where, name, t) for name, t in tensors.items()]
        return [from_native(o) for o in self._graph.run(native, attrs)]

    def _fake(self, inputs: List[torch.Tensor], attrs: Dict[str, float]) -> List[torch.Tensor]:
        """Outputs of the declared types, sizes from the inputs' (symbolic) shapes."""
        # B: from any input with a B or B+1 dim.
        batch = None
        for (name, _, dims), t in zip(self.inputs, inputs):
            for k, d in enumerate(dims):
                if batch is None and d in ("B", "B+1"):
                    batch = t.shape[k] - (1 if d == "B+1" else 0)
        roots = dict(self._graph.seqs())
        # The rows of a set: those of an input on a set of the same offsets.
        rows: Dict[str, object] = {}
        for (name, _, dims), t in zip(self.inputs, inputs):
            if dims and dims[0].startswith("%"):
                root = roots.get(dims[0])
                if root is not None:
                    rows.setdefault(root, t.shape[0])
        max_len = attrs.get("max_len", self._defaults.get("max_len"))
        dynamic: Dict[str, object] = {}
        ctx = torch.library.get_ctx()

        def size(d: str):
            if d == "B":
                return batch if batch is not None else ctx.new_dynamic_size()
            if d == "B+1":
                return (batch if batch is not None else ctx.new_dynamic_size()) + 1
            if d == "N":
                return int(max_len)
            if d.startswith("%"):
                root = roots.get(d)
                if root is not None and root in rows:
                    return rows[root]
                if d not in dynamic:
                    dynamic[d] = ctx.new_dynamic_size()
                return dynamic[d]
            return int(d)

        device = inputs[0].device if inputs else torch.device("cpu")
        return [
            torch.empty(tuple(size(d) for d in dims), dtype=TORCH_DTYPES[dtype], device=device)
            for _, dtype, dims in self.outputs
        ]


def _decode(attrs: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for item in filter(None, attrs.split(",")):
        name, _, value = item.partition("=")
        out[name] = float(value)
    return out


@torch.library.custom_op("jagged::run_graph", mutates_args=())
def run_graph(text: str, inputs: List[torch.Tensor], attrs: str) -> List[torch.Tensor]:
    """Runs the graph of canonical text `text` (see jagged.op) on `inputs`, in its input order;
    `attrs` is `name=value,...` (declared defaults for the others)."""
    g = op(text)
    values: Dict[str, object] = {}
    for name, value in _decode(attrs).items():
        values[name] = int(value) if g._attr_kinds.get(name) == "index" and value.is_integer() else value
    return g._run(list(inputs), values)


@run_graph.register_fake
def _(text, inputs, attrs):
    return op(text)._fake(list(inputs), _decode(attrs))


def _setup_context(ctx, inputs, output):
    text, tensors, attrs = inputs
    ctx.text, ctx.attrs = text, attrs
    ctx.outs = [(o.shape, o.dtype) for o in output]
    ctx.save_for_backward(*tensors)


def _backward(ctx, grads):
    """Runs the backward graph on the saved inputs and the float outputs' cotangents."""
    g = op(ctx.text)
    tensors = list(ctx.saved_tensors)
    if not g._float_inputs:
        return None, [None] * len(tensors), None
    cotangents = []
    for k in g._float_outputs:
        shape, dtype = ctx.outs[k]
        grad = grads[k]
        cotangents.append(torch.zeros(shape, dtype=dtype) if grad is None else grad.contiguous())
    back = g._backward
    outs = torch.ops.jagged.run_graph(back.text, tensors + cotangents, ctx.attrs)
    by_name = dict(zip(g._float_inputs, outs))
    return None, [by_name.get(name) for name in g._input_names], None


run_graph.register_autograd(_backward, setup_context=_setup_context)


@functools.lru_cache(maxsize=256)
def op(graph_text: str) -> GraphOp:
    """Compiles a graph in the canonical text form (a `.jir` file's contents) into a callable.

    Cached by text: the same text gives the same `GraphOp`.
    """
    return GraphOp(graph_text)
