"""A bit or finetune model as an ONNX graph that ONNX Runtime executes (docs/method.md,
"Inference").

The graph is written by hand with ``onnx.helper`` rather than traced by ``torch.onnx``: the
tracer would export each quantized weight as the float tensor it computes, while here it is
stored as its integer code, and the hand-written graph spells out the release's fp32 operation
order, op by op, where a traced one leaves it to the exporter's decompositions.

Weights. A quantized tensor at precision N is its signed code ``c`` (``BitLayer.code``,
``W = scale * c / (2^N - 1)``), stored as the narrowest ONNX integer type that holds
``|c| <= 2^N - 1`` with its sign, ``N + 1`` bits: INT4 for N <= 3, INT8 for N <= 7, INT16 for
N = 8 (ONNX has no 5- or 9-bit type; the paper's TB counts N bits, no sign). It enters the graph
as ``DequantizeLinear(c, 1, 0) / (2^N - 1) * scale``: the model's own fp32 order (``Q_N`` then
the scale), so the dequantized weight is the checkpoint's bit for bit, which one
``DequantizeLinear`` with the scale ``scale / (2^N - 1)`` is not (its product rounds once, the
model's quotient and product twice). ONNX Runtime keeps ``DequantizeLinear`` unfolded, as in any
QDQ graph, so the chain runs with each call: elementwise over the weights, small next to the
convolutions. A precision-0 tensor is a zero constant of its shape. BatchNorm, the shortcut convs
and PACT's alphas stay float32.

Activations: ReLU6 (``--act`` >= 4) or PACT (``min(max(x, 0), alpha)``), then
``S * (Round(x k / S) / k)`` with ``S = max(max|x|, 2^-149)`` over the whole batch, as
``utils/ste.py`` computes it. The range is the batch's, so an image's output depends on the
batch it is in, as in PyTorch; ``--act 0`` has no quantizer.
"""
import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from utils.engine import meters
from utils.ste import SMALLEST_POSITIVE, levels

from .bitlayer import BitLayer

OPSET = 21  # the first with INT4 and INT16 in DequantizeLinear
INT_TYPES = ((3, ml_dtypes.int4), (7, np.int8), (8, np.int16))  # (largest N, code type)
INPUT, OUTPUT = "input", "logits"


def code_type(nbits):
    """The numpy type of a code at precision ``nbits``: N magnitude bits and a sign."""
    return next(t for most, t in INT_TYPES if nbits <= most)


class _Graph:
    """Nodes and initializers of a graph under construction; each op returns its output name."""

    def __init__(self):
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, array, hint):
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def scalar(self, value, hint="c"):
        return self.const(np.array(value, dtype=np.float32), hint)

    def op(self, op_type, *inputs, hint=None, **attrs):
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def _tensor(t):
    return t.detach().cpu().contiguous().numpy()


def _weight(g, layer, slot, name, float_weights):
    """The graph value of the tensor ``layer`` uses for ``slot``, None where it uses none."""
    if not layer.uses(slot):
        return None
    nbits = layer.nbits[slot]
    if float_weights:
        return g.const(_tensor(layer.quantized(slot).float()), f"{name}.{slot}")
    if nbits == 0:
        shape = g.const(np.array(layer.shapes[slot], dtype=np.int64), f"{name}.{slot}.shape")
        return g.op("ConstantOfShape", shape, hint=f"{name}.{slot}",
                    value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    dtype = code_type(nbits)
    code = g.const(_tensor(layer.code(slot)).astype(dtype), f"{name}.{slot}.code")
    one, zero = g.scalar(1.0, "one"), g.const(np.zeros((), dtype=dtype), "zero_point")
    c = g.op("DequantizeLinear", code, one, zero, hint=f"{name}.{slot}.int")  # exact in fp32
    q = g.op("Div", c, g.scalar(float(levels(nbits)), "levels"))  # Q_N(w)
    return g.op("Mul", q, g.const(_tensor(layer.scale_of(slot).float()), f"{name}.{slot}.scale"),
                hint=f"{name}.{slot}")


def _conv(g, x, conv, name, float_weights=False):
    """A ``BitConv2d`` (through ``_weight``) or a plain float ``nn.Conv2d``."""
    if isinstance(conv, BitLayer):
        inputs = [_weight(g, conv, s, name, float_weights) for s in conv.slots]
    else:
        inputs = [g.const(_tensor(conv.weight), f"{name}.weight")]
    return g.op("Conv", x, *[i for i in inputs if i is not None], hint=name,
                kernel_shape=list(conv.kernel_size), strides=list(conv.stride),
                pads=list(conv.padding) * 2)


def _bn(g, x, bn, name):
    tensors = [g.const(_tensor(t), f"{name}.{k}") for k, t in
               (("weight", bn.weight), ("bias", bn.bias), ("running_mean", bn.running_mean),
                ("running_var", bn.running_var))]
    return g.op("BatchNormalization", x, *tensors, hint=name, epsilon=bn.eps)


def _activation(g, x, quantizer, name):
    """``ActQuantizer``: ReLU6 or PACT, then the per-batch max-scaled quantizer."""
    if quantizer.act >= 4:
        x = g.op("Clip", x, g.scalar(0.0, "zero"), g.scalar(6.0, "six"), hint=f"{name}.relu6")
    else:
        alpha = g.const(_tensor(quantizer.alpha), f"{name}.alpha")
        x = g.op("Min", g.op("Relu", x), alpha, hint=f"{name}.pact")
    if not quantizer.act:
        return x
    k = g.scalar(float(levels(quantizer.act)), "levels")
    s = g.op("Max", g.op("ReduceMax", g.op("Abs", x), keepdims=0),
             g.scalar(SMALLEST_POSITIVE, "tiny"), hint=f"{name}.range")  # () per batch
    r = g.op("Round", g.op("Div", g.op("Mul", x, k), s))
    return g.op("Mul", s, g.op("Div", r, k), hint=name)


def build_graph(model, float_weights=False):
    """The ``onnx.ModelProto`` of ``model``'s inference forward, batch dimension dynamic.

    ``float_weights``: every weight as the float32 tensor it dequantizes to (for the size
    comparison in ``benchmarks/onnx.py``).
    """
    assert model.form != "float", "a float model has no codes to export"
    g = _Graph()
    x = g.op("Relu", _bn(g, _conv(g, INPUT, model.conv1, "conv1", float_weights), model.bn1,
                         "bn1"))
    for stage in ("layer1", "layer2", "layer3"):
        for i, block in enumerate(getattr(model, stage)):
            name = f"{stage}.{i}"
            out = _conv(g, x, block.conv1, f"{name}.conv1", float_weights)
            out = _activation(g, _bn(g, out, block.bn1, f"{name}.bn1"), block.relu1,
                              f"{name}.relu1")
            out = _bn(g, _conv(g, out, block.conv2, f"{name}.conv2", float_weights), block.bn2,
                      f"{name}.bn2")
            if block.downsample is not None:
                conv, bn = block.downsample
                x = _bn(g, _conv(g, x, conv, f"{name}.downsample.0"), bn, f"{name}.downsample.1")
            x = _activation(g, g.op("Add", out, x), block.relu2, f"{name}.relu2")
    x = g.op("Flatten", g.op("AveragePool", x, kernel_shape=[8, 8], strides=[8, 8]), axis=1)
    fc = [_weight(g, model.fc, s, "fc", float_weights) for s in model.fc.slots]
    g.nodes.append(helper.make_node("Gemm", [x, *[v for v in fc if v is not None]], [OUTPUT],
                                    transB=1))
    graph = helper.make_graph(
        g.nodes, f"resnet{model.depth}_bsq",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", model.num_classes])],
        g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bsq-cifar")
    proto.ir_version = helper.find_min_ir_version_for(proto.opset_import)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def graph_sizes(model):
    """``(data, float_bytes, paper_bytes)``: the serialized graph of ``model``, the size of the
    same graph with float32 weights, and the paper's size TB/8."""
    data = build_graph(model).SerializeToString()
    float_bytes = len(build_graph(model, float_weights=True).SerializeToString())
    return data, float_bytes, model.size()[1] / 8


def session(data, threads=0):
    """An ONNX Runtime CPU session of the serialized model ``data`` (bytes) or a file path;
    ``threads``: its intra-op threads (0: ONNX Runtime's choice)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def logits(sess, x):
    """ONNX Runtime's logits (B, classes) of a float32 batch ``x`` (B, 3, 32, 32), on the CPU."""
    return torch.from_numpy(sess.run([OUTPUT], {INPUT: _tensor(x.float())})[0])


@torch.no_grad()
def compare(model, other, loader):
    """``model`` in eval mode against ``other`` (a batch -> logits function, e.g.
    ``functools.partial(logits, sess)`` for an ONNX Runtime session), batch by batch over
    ``loader``: both test accuracies as ``utils.engine.evaluate`` computes them (percent), the
    share of images whose predicted class agrees (percent), the largest absolute logit
    difference."""
    model.eval()
    totals = torch.zeros(2, 2, dtype=torch.float64)  # (model, other) x (ce * n, top-1 * n)
    agree, count, diff = 0, 0, 0.0
    for x, y in loader:
        ours, theirs = model(x).float().cpu(), other(x).float().cpu()
        y = y.cpu()
        for row, out in enumerate((ours, theirs)):
            totals[row] += meters(F.cross_entropy(out, y), out, y)
        agree += int((ours.argmax(1) == theirs.argmax(1)).sum())
        count += len(y)
        diff = max(diff, float((ours - theirs).abs().max()))
    acc, other_acc = (totals[:, 1] / count).tolist()
    return {"acc": acc, "other_acc": other_acc, "agree": 100 * agree / count,
            "max_logit_diff": diff}
