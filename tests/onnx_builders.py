"""Tiny ONNX models with the input/output contracts of the real backends' models.

Each model's outputs are fixed arrays chosen by the test (added to 0 x the mean of
the input, so the graph still reads its input), or, for the expression model, a
linear function of the crop's mean colour so the preprocessing is exercised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17
Dim = Union[int, str]


def save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def constant_model(
    path: Path,
    input_shape: Sequence[Dim],
    outputs: Sequence[Tuple[str, np.ndarray]],
    input_name: str = "input.1",
    leading_nodes: Sequence[onnx.NodeProto] = (),
    reduce_from: Optional[str] = None,
) -> Path:
    """A model whose named outputs are the given arrays whatever the input.

    `leading_nodes` run first; `reduce_from` names the tensor the outputs are tied
    to (the input by default).
    """
    nodes: List[onnx.NodeProto] = list(leading_nodes)
    nodes += [
        helper.make_node("ReduceMean", [reduce_from or input_name], ["input_mean"], keepdims=0),
        helper.make_node("Mul", ["input_mean", "zero"], ["input_zero"]),
    ]
    initializers = [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")]
    graph_outputs = []
    for name, value in outputs:
        const = f"{name}_value"
        initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), const))
        nodes.append(helper.make_node("Add", [const, "input_zero"], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(np.shape(value))))
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        graph_outputs,
        initializer=initializers,
    )
    return save(graph, path)


# ---------------------------------------------------------------- SCRFD


@dataclass
class PlantedFace:
    """A face the SCRFD-shaped model reports at one anchor, in input pixels."""

    stride: int
    row: int
    col: int
    score: float
    box: Tuple[float, float, float, float]  # x1, y1, x2, y2
    keypoints: Optional[np.ndarray] = None  # (5, 2)
    anchor: int = 0

    @property
    def centre(self) -> Tuple[float, float]:
        return float(self.col * self.stride), float(self.row * self.stride)


def scrfd_outputs(
    input_hw: Tuple[int, int],
    faces: Sequence[PlantedFace],
    keypoints: bool = True,
    batch: bool = True,
    anchors: int = 2,
    background_score: float = 0.01,
) -> List[Tuple[str, np.ndarray]]:
    """Outputs in the standard export order: scores x3, boxes x3 (, keypoints x3)."""
    h, w = input_hw
    strides = (8, 16, 32)
    scores: Dict[int, np.ndarray] = {}
    boxes: Dict[int, np.ndarray] = {}
    kps: Dict[int, np.ndarray] = {}
    for s in strides:
        n = (h // s) * (w // s) * anchors
        scores[s] = np.full((n, 1), background_score, np.float32)
        boxes[s] = np.ones((n, 4), np.float32)
        kps[s] = np.zeros((n, 10), np.float32)
    for face in faces:
        s = face.stride
        index = (face.row * (w // s) + face.col) * anchors + face.anchor
        cx, cy = face.centre
        x1, y1, x2, y2 = face.box
        scores[s][index, 0] = face.score
        boxes[s][index] = np.array([cx - x1, cy - y1, x2 - cx, y2 - cy]) / s
        if face.keypoints is not None:
            kps[s][index] = ((np.asarray(face.keypoints, np.float32) - [cx, cy]) / s).reshape(-1)

    def shaped(a: np.ndarray) -> np.ndarray:
        return a[np.newaxis] if batch else a

    outputs = [(f"score_{s}", shaped(scores[s])) for s in strides]
    outputs += [(f"bbox_{s}", shaped(boxes[s])) for s in strides]
    if keypoints:
        outputs += [(f"kps_{s}", shaped(kps[s])) for s in strides]
    return outputs


def scrfd_model(
    path: Path,
    input_hw: Tuple[int, int],
    faces: Sequence[PlantedFace],
    keypoints: bool = True,
    batch: bool = True,
    dynamic_input: bool = False,
    order: Optional[Sequence[int]] = None,
) -> Path:
    outputs = scrfd_outputs(input_hw, faces, keypoints=keypoints, batch=batch)
    if order is not None:
        outputs = [outputs[i] for i in order]
    shape: List[Dim] = [1, 3, "height", "width"] if dynamic_input else [1, 3, input_hw[0], input_hw[1]]
    return constant_model(path, shape, outputs)


# ---------------------------------------------------------------- YOLOv8-pose


@dataclass
class PlantedPerson:
    """A person the YOLOv8-pose-shaped model reports at one anchor, in input pixels."""

    anchor: int
    score: float
    box: Tuple[float, float, float, float]  # cx, cy, w, h
    keypoints: np.ndarray  # (17, 3): x, y, confidence


def yolo_pose_model(
    path: Path, people: Sequence[PlantedPerson], size: int = 640, transposed: bool = False
) -> Path:
    anchors = sum((size // s) ** 2 for s in (8, 16, 32))
    out = np.zeros((56, anchors), np.float32)
    out[2:4] = 10.0  # background anchors: small boxes with score 0
    for person in people:
        out[0:4, person.anchor] = person.box
        out[4, person.anchor] = person.score
        out[5:, person.anchor] = np.asarray(person.keypoints, np.float32).reshape(-1)
    value = out.T[np.newaxis] if transposed else out[np.newaxis]
    return constant_model(path, [1, 3, size, size], [("output0", value)], input_name="images")


# ---------------------------------------------------------------- 1k3d68


def landmark_68_model(path: Path, points_crop: np.ndarray, size: int = 192, normalize_inside: bool = False) -> Path:
    """A 1k3d68-shaped model: (1, 3309) whose last 68 x 3 values are `points_crop` (-1..1 crop units).

    With `normalize_inside` the graph starts with Sub and Mul nodes, as exports that
    normalize their own input do.
    """
    flat = np.zeros(3309, np.float32)
    flat[-68 * 3 :] = np.asarray(points_crop, np.float32).reshape(-1)
    leading: List[onnx.NodeProto] = []
    if normalize_inside:
        leading = [
            helper.make_node("Sub", ["data", "zero"], ["centred"], name="Sub_0"),
            helper.make_node("Mul", ["centred", "zero"], ["scaled"], name="Mul_1"),
        ]
    return constant_model(
        path,
        [1, 3, size, size],
        [("fc1", flat[np.newaxis])],
        input_name="data",
        leading_nodes=leading,
        reduce_from="scaled" if normalize_inside else None,
    )


# ---------------------------------------------------------------- expression


def expression_model(path: Path, weights: np.ndarray, size: int = 224, bias: Optional[np.ndarray] = None) -> Path:
    """Logits = mean colour (R, G, B after normalization) @ weights (3, C) + bias."""
    classes = weights.shape[1]
    bias = np.zeros(classes, np.float32) if bias is None else bias
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], ["mixed"]),
        helper.make_node("Add", ["mixed", "bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "expression",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        initializer=[
            numpy_helper.from_array(np.asarray(weights, np.float32), "weights"),
            numpy_helper.from_array(np.asarray(bias, np.float32), "bias"),
        ],
    )
    return save(graph, path)
