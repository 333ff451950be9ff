"""A small ONNX graph builder and the ONNX form of the Heaviside step (on any values, and on integer-valued
floats), shared by the exporters."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Graph:
    """Collects nodes and constants with unique names; ``model()`` checks and returns the ModelProto."""

    def __init__(self, name: str):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0
        self._renamed: dict[str, str] = {}  # a node's output given a graph output's name (``output``)

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.fresh(hint or op_type.lower())
        inputs = [self._renamed.get(i, i) for i in inputs]
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def split(self, x: str, parts: int, axis: int, hint: str = "part") -> list[str]:
        """``Split`` of x into ``parts`` equal parts along ``axis``: their names."""
        outs = [self.fresh(hint) for _ in range(parts)]
        x = self._renamed.get(x, x)
        self.nodes.append(helper.make_node("Split", [x], outs, name=self.fresh("split"), axis=axis))
        return outs

    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: list) -> None:
        """Make ``value`` the graph output ``name``: the node computing it writes ``name`` itself (an Identity
        node between would copy it: onnxruntime keeps one where the value also feeds another node); an
        Identity only for a value that is not a node's output here or is an output already."""
        value = self._renamed.get(value, value)
        producer = next((n for n in self.nodes if value in n.output), None)
        if producer is None or value in {o.name for o in self.outputs}:
            self.nodes.append(helper.make_node("Identity", [value], [name], name=f"out_{name}"))
        else:
            producer.output[list(producer.output).index(value)] = name
            for node in self.nodes:
                node.input[:] = [name if i == value else i for i in node.input]
            self._renamed[value] = name
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def model(self, metadata: dict | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bnn")
        model.ir_version = min(model.ir_version, 9)  # readable by older onnxruntime releases too
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key = key
            entry.value = value if isinstance(value, str) else json.dumps(value)
        onnx.checker.check_model(model, full_check=True)
        return model


def heaviside(g: Graph, z: str, threshold: str) -> str:
    """H(z - t) = 1 if z >= t else 0 as bool: the Heaviside step, in every graph bnn writes."""
    return g.op("GreaterOrEqual", [z, threshold], "step")


def heaviside_of_integers(g: Graph, z: str) -> str:
    """The same step on a float tensor of integers ``z = s - t + 1``: ``HardSigmoid(z)`` with alpha 1 and beta 0,
    ``min(max(1 * z + 0, 0), 1)``, is 1 exactly when s >= t, as a float 0/1. onnxruntime fuses it into the Conv
    *and* the Gemm before it (its output loop clamps; no pass of its own), where it fuses ``Clip`` into Conv only."""
    return g.op("HardSigmoid", [z], "step", alpha=1.0, beta=0.0)


BOOL = TensorProto.BOOL
FLOAT = TensorProto.FLOAT
DOUBLE = TensorProto.DOUBLE
INT32 = TensorProto.INT32
INT64 = TensorProto.INT64
UINT8 = TensorProto.UINT8
