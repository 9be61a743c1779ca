"""`jagged.op(graph_text)`: any graph in the canonical text form as a callable on CPU tensors."""

import functools
from typing import Dict, List, Tuple, Union

import torch

from . import _native
from ._tensors import from_native, to_native


class GraphOp:
    """A graph compiled from its canonical text (see docs/ops.md, "The IR").

    Call it with the graph's inputs (positionally in the graph's input order,
    or by name) and its attributes by name (declared defaults for the
    others). It returns the outputs in the graph's output order: a tensor
    when the graph has one output, else a tuple. The kernels are compiled on
    the first call for each specialization (inner dims, dtypes, `max_len`
    bucket) and cached (in memory and in the kernel cache on disk).

    Not differentiable yet: calling it with inputs that require grad while
    grad mode is on raises NotImplementedError.
    """

    def __init__(self, text: str):
        self._graph = _native.CompiledGraph(text)
        self.name: str = self._graph.name
        self.inputs: List[Tuple[str, str, List[str]]] = self._graph.inputs()
        self.attrs: List[Tuple[str, str, object]] = self._graph.attrs()
        self.outputs: List[Tuple[str, str, List[str]]] = self._graph.outputs()
        self._input_names = [name for name, _, _ in self.inputs]
        self._attr_names = {name for name, _, _ in self.attrs}

    @property
    def text(self) -> str:
        """The canonical text of the graph."""
        return self._graph.text()

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
        if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors.values()):
            raise NotImplementedError(
                f"jagged.{where}: graphs run by jagged.op are not differentiable yet; "
                f"call it under torch.no_grad() or pass detached inputs"
            )
        native = [to_native(where, name, tensors[name]) for name in self._input_names]
        outs = [from_native(o) for o in self._graph.run(native, attrs)]
        return outs[0] if len(outs) == 1 else tuple(outs)


@functools.lru_cache(maxsize=256)
def op(graph_text: str) -> GraphOp:
    """Compiles a graph in the canonical text form (a `.jir` file's contents) into a callable.

    Cached by text: the same text gives the same `GraphOp`.
    """
    return GraphOp(graph_text)
