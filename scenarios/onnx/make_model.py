"""Builds the example model: a 1024 -> 4096 -> 4096 -> 10 ReLU MLP (about 41 MFLOP per row), seeded weights."""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)
sizes = [1024, 4096, 4096, 10]
nodes, initializers = [], []
previous = "input"
for index, (rows, columns) in enumerate(zip(sizes, sizes[1:])):
    weights = (rng.standard_normal((rows, columns)) / np.sqrt(rows)).astype(np.float32)
    initializers.append(numpy_helper.from_array(weights, f"w{index}"))
    last = index == len(sizes) - 2
    linear = "logits" if last else f"linear{index}"
    nodes.append(helper.make_node("MatMul", [previous, f"w{index}"], [linear]))
    if not last:
        previous = f"hidden{index}"
        nodes.append(helper.make_node("Relu", [linear], [previous]))
graph = helper.make_graph(
    nodes,
    "mlp",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", sizes[-1]])],
    initializers,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
