"""A bit or finetune model as an ONNX graph that ONNX Runtime executes (docs/method.md,
"Inference"), for any network: one handler per layer type and per function, as Brevitas's export
handlers are.

The network's forward pass is traced with ``torch.fx`` in eval mode (bit layers and activation
quantizers as leaves, as in ``models/swap.py``), and each node of the trace is written as ONNX
operators by the handler of its module type (``MODULES``), function (``FUNCTIONS``) or tensor
method (``METHODS``); a node without one is named in one line (``ExportError``). The graph is
written with ``onnx.helper`` rather than by ``torch.onnx``: the exporter would store each
quantized weight as the float tensor it computes, while here it is stored as its integer code,
and the handlers spell out the release's fp32 operation order, op by op.

Weights. A quantized tensor at precision N is its signed code ``c`` (``BitLayer.code``,
``W = scale * c / (2^N - 1)``), stored as the narrowest ONNX integer type that holds
``|c| <= 2^N - 1`` with its sign, ``N + 1`` bits: INT4 for N <= 3, INT8 for N <= 7, INT16 for
N = 8 (ONNX has no 5- or 9-bit type; the paper's TB counts N bits, no sign). It enters the graph
as ``DequantizeLinear(c, 1, 0) / (2^N - 1) * scale``: the model's own fp32 order (``Q_N`` then
the scale), so the dequantized weight is the checkpoint's bit for bit, which one
``DequantizeLinear`` with the scale ``scale / (2^N - 1)`` is not (its product rounds once, the
model's quotient and product twice). ONNX Runtime keeps ``DequantizeLinear`` unfolded, as in any
QDQ graph, so the chain runs with each call: elementwise over the weights, small next to the
convolutions. A precision-0 tensor is a zero constant of its shape. BatchNorm, float convs and
PACT's alphas stay float32.

Activations: ReLU6 (``--act`` >= 4) or PACT (``min(max(x, 0), alpha)``), then
``S * (Round(x k / S) / k)`` with ``S = max(max|x|, 2^-149)`` over the whole batch, as
``utils/quant/ste.py`` computes it. The range is the batch's, so an image's output depends on the
batch it is in, as in PyTorch; ``--act 0`` has no quantizer.

The input is ``(batch, C, H, W)`` with the batch dimension dynamic and ``C, H, W`` those of the
data the model is run on (``input_shape``).
"""
import operator

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch.fx.passes.shape_prop import ShapeProp

from utils.errors import BSQError
from utils.quant.ste import SMALLEST_POSITIVE, levels
from utils.report.meters import meters

from .activation import ActQuantizer
from .bitlayer import BitLayer
from .swap import trace

OPSET = 21  # the first with INT4 and INT16 in DequantizeLinear
INT_TYPES = ((3, ml_dtypes.int4), (7, np.int8), (8, np.int16))  # (largest N, code type)
INPUT, OUTPUT = "input", "logits"


class ExportError(BSQError):
    """A network the ONNX export has no handler for; the message names the node."""


def code_type(nbits):
    """The numpy type of a code at precision ``nbits``: N magnitude bits and a sign."""
    return next(t for most, t in INT_TYPES if nbits <= most)


class _Graph:
    """Nodes and initializers of a graph under construction; each op returns its output name."""

    def __init__(self, float_weights=False):
        self.nodes, self.initializers, self.count = [], [], 0
        self.float_weights = float_weights
        self.shapes = {}  # value name -> its shape at batch 1 (the trace's, for the handlers)

    def name(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, array, hint):
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def scalar(self, value, hint="c"):
        return self.const(np.array(value, dtype=np.float32), hint)

    def ints(self, values, hint="shape"):
        return self.const(np.array(values, dtype=np.int64), hint)

    def op(self, op_type, *inputs, hint=None, **attrs):
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def _tensor(t):
    return t.detach().cpu().contiguous().numpy()


# -- weights -----------------------------------------------------------------------------------
def _weight(g, layer, slot, name):
    """The graph value of the tensor ``layer`` uses for ``slot``, None where it uses none: the
    dequantized integer code of a bit layer, the float tensor of a float layer."""
    if not isinstance(layer, BitLayer):
        tensor = getattr(layer, slot)
        return None if tensor is None else g.const(_tensor(tensor), f"{name}.{slot}")
    if not layer.uses(slot):
        return None
    nbits = layer.nbits[slot]
    if g.float_weights:
        return g.const(_tensor(layer.quantized(slot).float()), f"{name}.{slot}")
    if nbits == 0:
        shape = g.ints(layer.shapes[slot], f"{name}.{slot}.shape")
        return g.op("ConstantOfShape", shape, hint=f"{name}.{slot}",
                    value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    dtype = code_type(nbits)
    code = g.const(_tensor(layer.code(slot)).astype(dtype), f"{name}.{slot}.code")
    one, zero = g.scalar(1.0, "one"), g.const(np.zeros((), dtype=dtype), "zero_point")
    c = g.op("DequantizeLinear", code, one, zero, hint=f"{name}.{slot}.int")  # exact in fp32
    q = g.op("Div", c, g.scalar(float(levels(nbits)), "levels"))  # Q_N(w)
    return g.op("Mul", q, g.const(_tensor(layer.scale_of(slot).float()), f"{name}.{slot}.scale"),
                hint=f"{name}.{slot}")


# -- handlers of modules: (graph, x, module, name) -> value ------------------------------------
def _conv(g, x, conv, name):
    """``nn.Conv2d`` or ``BitConv2d``: Conv with its stride, padding, dilation and groups."""
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ExportError(f"{name}: padding {conv.padding!r} / {conv.padding_mode} has no handler")
    inputs = [_weight(g, conv, slot, name) for slot in ("weight", "bias")]
    return g.op("Conv", x, *[i for i in inputs if i is not None], hint=name,
                kernel_shape=list(conv.kernel_size), strides=list(conv.stride),
                pads=list(conv.padding) * 2, dilations=list(conv.dilation), group=conv.groups)


def _linear(g, x, linear, name):
    """``nn.Linear`` or ``BitLinear``: ``x W^T + b``, Gemm on a matrix."""
    inputs = [_weight(g, linear, slot, name) for slot in ("weight", "bias")]
    return g.op("Gemm", x, *[i for i in inputs if i is not None], hint=name, transB=1)


def _batch_norm(g, x, bn, name):
    if bn.running_mean is None:
        raise ExportError(f"{name}: a BatchNorm without running statistics has no handler")
    weight = bn.weight if bn.affine else torch.ones_like(bn.running_mean)
    bias = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    tensors = [g.const(_tensor(t), f"{name}.{k}") for k, t in
               (("weight", weight), ("bias", bias), ("running_mean", bn.running_mean),
                ("running_var", bn.running_var))]
    return g.op("BatchNormalization", x, *tensors, hint=name, epsilon=bn.eps)


def _relu6(g, x, name):
    return g.op("Clip", x, g.scalar(0.0, "zero"), g.scalar(6.0, "six"), hint=name)


def _act_quantizer(g, x, quantizer, name):
    """``ActQuantizer``: ReLU6 or PACT, then the per-batch max-scaled quantizer."""
    if quantizer.act >= 4:
        x = _relu6(g, x, f"{name}.relu6")
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


def _pool(op_type, g, x, name, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
          count_include_pad=True):
    pair = lambda v: list(v) if isinstance(v, (tuple, list)) else [v, v]  # noqa: E731
    attrs = {"kernel_shape": pair(kernel_size), "strides": pair(stride or kernel_size),
             "pads": pair(padding) * 2, "ceil_mode": int(ceil_mode)}
    if op_type == "MaxPool":
        attrs["dilations"] = pair(dilation)
    else:
        attrs["count_include_pad"] = int(count_include_pad)
    return g.op(op_type, x, hint=name, **attrs)


def _adaptive_pool(g, x, name, output_size):
    """Adaptive average pooling: global to 1x1, or to an output whose sides divide the input's
    (VGG's 7x7 of 224x224 images), where it is an average pool of kernel = stride = in / out."""
    out = (output_size,) * 2 if isinstance(output_size, int) else tuple(output_size)
    if out == (1, 1):
        return g.op("GlobalAveragePool", x, hint=name)
    height, width = g.shapes[x][-2:]
    if None in out or height % out[0] or width % out[1]:
        raise ExportError(f"{name}: adaptive average pooling of {height}x{width} to {out} has "
                          "no handler (the input's sides must be multiples of the output's)")
    kernel = [height // out[0], width // out[1]]
    if kernel == [1, 1]:
        return x
    return g.op("AveragePool", x, hint=name, kernel_shape=kernel, strides=kernel)


def _flatten(g, x, name, start_dim=1, end_dim=-1):
    if (start_dim, end_dim) != (1, -1):
        raise ExportError(f"{name}: flatten({start_dim}, {end_dim}) has no handler")
    return g.op("Flatten", x, hint=name, axis=1)


def _unary(op_type, **attrs):
    """A handler of an elementwise call ``f(x)`` (``inplace`` ignored): one ONNX op."""
    return lambda g, name, x, *args, **kwargs: g.op(op_type, x, hint=name, **attrs)


_sigmoid, _tanh, _hardswish = _unary("Sigmoid"), _unary("Tanh"), _unary("HardSwish")
_hardsigmoid = _unary("HardSigmoid", alpha=1 / 6)  # PyTorch's slope; ONNX's default is 0.2


def _silu(g, name, x, inplace=False):
    return g.op("Mul", x, g.op("Sigmoid", x), hint=name)


def _gelu(g, name, x, approximate="none"):
    return g.op("Gelu", x, hint=name, approximate=approximate)


def _layer_norm(g, x, m, name):
    """``nn.LayerNorm`` over its last ``len(normalized_shape)`` axes: LayerNormalization."""
    shape = tuple(m.normalized_shape)
    weight = m.weight if m.weight is not None else torch.ones(shape)
    bias = m.bias if m.bias is not None else torch.zeros(shape)
    return g.op("LayerNormalization", x, g.const(_tensor(weight), f"{name}.weight"),
                g.const(_tensor(bias), f"{name}.bias"), hint=name, axis=-len(shape),
                epsilon=m.eps)


MODULES = {
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm2d: _batch_norm,
    ActQuantizer: _act_quantizer,
    nn.ReLU: lambda g, x, m, name: g.op("Relu", x, hint=name),
    nn.ReLU6: lambda g, x, m, name: _relu6(g, x, name),
    nn.MaxPool2d: lambda g, x, m, name: _pool("MaxPool", g, x, name, m.kernel_size, m.stride,
                                              m.padding, m.dilation, m.ceil_mode),
    nn.AvgPool2d: lambda g, x, m, name: _pool("AveragePool", g, x, name, m.kernel_size,
                                              m.stride, m.padding, 1, m.ceil_mode,
                                              m.count_include_pad),
    nn.AdaptiveAvgPool2d: lambda g, x, m, name: _adaptive_pool(g, x, name, m.output_size),
    nn.Flatten: lambda g, x, m, name: _flatten(g, x, name, m.start_dim, m.end_dim),
    nn.Dropout: lambda g, x, m, name: x,  # identity in eval mode
    nn.Identity: lambda g, x, m, name: x,
    nn.SiLU: lambda g, x, m, name: _silu(g, name, x),
    nn.Sigmoid: lambda g, x, m, name: _sigmoid(g, name, x),
    nn.Hardswish: lambda g, x, m, name: _hardswish(g, name, x),
    nn.Hardsigmoid: lambda g, x, m, name: _hardsigmoid(g, name, x),
    nn.Tanh: lambda g, x, m, name: _tanh(g, name, x),
    nn.GELU: lambda g, x, m, name: _gelu(g, name, x, m.approximate),
    nn.LayerNorm: _layer_norm,
}


# -- handlers of functions and tensor methods: (graph, name, *args, **kwargs) -> value ----------
class _Size:
    """``x.size(d)`` in a shape: Reshape's 0 (copy the dimension) where it sits at index d."""

    def __init__(self, dim):
        self.dim = dim


def _reshape(g, name, x, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    dims = []
    for i, d in enumerate(shape):
        if isinstance(d, _Size) and d.dim == i:
            dims.append(0)  # ONNX Reshape: 0 copies the input's dimension i (the batch)
        elif isinstance(d, int):
            dims.append(d)
        else:
            raise ExportError(f"{name}: a reshape to {shape} has no handler")
    return g.op("Reshape", x, g.ints(dims), hint=name)


def _size(g, name, x, dim=None):
    if dim is None:
        raise ExportError(f"{name}: x.size() without a dimension has no handler")
    return _Size(dim)


def _binary(op_type):
    def handler(g, name, a, b):
        a, b = (g.scalar(float(v)) if isinstance(v, (int, float)) else v for v in (a, b))
        return g.op(op_type, a, b, hint=name)
    return handler


def _cat(g, name, tensors, dim=0):
    return g.op("Concat", *tensors, hint=name, axis=dim)


def _avg_pool_fn(g, name, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
    if divisor_override is not None:
        raise ExportError(f"{name}: avg_pool2d with divisor_override has no handler")
    return _pool("AveragePool", g, x, name, kernel_size, stride, padding, 1, ceil_mode,
                 count_include_pad)


def _max_pool_fn(g, name, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 return_indices=False):
    if return_indices:
        raise ExportError(f"{name}: max_pool2d with return_indices has no handler")
    return _pool("MaxPool", g, x, name, kernel_size, stride, padding, dilation, ceil_mode)


def _relu_fn(g, name, x, inplace=False):
    return g.op("Relu", x, hint=name)


def _identity(g, name, x, *args, **kwargs):
    return x


def _getitem(g, name, x, index):
    """``x[index]`` with ``index`` a tuple of integers and slices of integers (Inception-V3's
    ``x[:, 0]``): a Slice per sliced axis, a Gather per indexed one (which drops the axis)."""
    if not isinstance(x, str):
        raise ExportError(f"{name}: indexing a {type(x).__name__} has no handler")
    index = index if isinstance(index, tuple) else (index,)
    axis = 0
    for item in index:
        if isinstance(item, slice) and all(isinstance(v, (int, type(None)))
                                           for v in (item.start, item.stop, item.step)):
            if item != slice(None):
                start, stop, step = item.start or 0, item.stop, item.step or 1
                stop = stop if stop is not None else np.iinfo(np.int64).max
                x = g.op("Slice", x, g.ints([start]), g.ints([stop]), g.ints([axis]),
                         g.ints([step]), hint=name)
            axis += 1
        elif isinstance(item, int):
            x = g.op("Gather", x, g.const(np.array(item, dtype=np.int64), "index"), hint=name,
                     axis=axis)
        else:
            raise ExportError(f"{name}: indexing with {index} has no handler")
    return x


def _unsqueeze(g, name, x, dim):
    return g.op("Unsqueeze", x, g.ints([dim]), hint=name)


def _mean(g, name, x, dim=None, keepdim=False, dtype=None):
    """``x.mean(dim, keepdim)`` / ``torch.mean``: ReduceMean over ``dim`` (all axes if None)."""
    if dtype is not None:
        raise ExportError(f"{name}: mean with a dtype has no handler")
    if dim is None:
        return g.op("ReduceMean", x, hint=name, keepdims=int(keepdim))
    axes = [dim] if isinstance(dim, int) else list(dim)
    return g.op("ReduceMean", x, g.ints(axes, "axes"), hint=name, keepdims=int(keepdim))


def _interpolate(g, name, x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None, antialias=False):
    """``F.interpolate`` of a 4-d tensor, nearest or bilinear: Resize with the scales that give
    its output size (from the traced input's), in PyTorch's coordinate convention."""
    if mode not in ("nearest", "bilinear") or antialias:
        raise ExportError(f"{name}: interpolate mode {mode!r} has no handler (nearest, bilinear)")
    height, width = g.shapes[x][-2:]
    if size is not None:
        out = (size, size) if isinstance(size, int) else tuple(size)
    else:
        factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * 2
        out = (int(height * factors[0]), int(width * factors[1]))
    scales = g.const(np.array([1.0, 1.0, out[0] / height, out[1] / width], dtype=np.float32),
                     "scales")
    if mode == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                 "nearest_mode": "floor"}
    else:
        attrs = {"mode": "linear", "coordinate_transformation_mode":
                 "align_corners" if align_corners else "pytorch_half_pixel"}
    return g.op("Resize", x, "", scales, hint=name, **attrs)


FUNCTIONS = {
    operator.add: _binary("Add"), operator.iadd: _binary("Add"), torch.add: _binary("Add"),
    operator.mul: _binary("Mul"), torch.mul: _binary("Mul"),
    torch.cat: _cat, torch.flatten: lambda g, name, x, *a, **k: _flatten(g, x, name, *a, **k),
    F.relu: _relu_fn, torch.relu: _relu_fn,
    F.relu6: lambda g, name, x, inplace=False: _relu6(g, x, name),
    F.avg_pool2d: _avg_pool_fn, F.max_pool2d: _max_pool_fn, torch.max_pool2d: _max_pool_fn,
    F.adaptive_avg_pool2d: lambda g, name, x, output_size: _adaptive_pool(g, x, name,
                                                                         output_size),
    F.dropout: _identity,
    operator.getitem: _getitem, torch.unsqueeze: _unsqueeze,
    torch.sigmoid: _sigmoid, F.sigmoid: _sigmoid, torch.tanh: _tanh, F.tanh: _tanh,
    F.hardswish: _hardswish, F.hardsigmoid: _hardsigmoid, F.silu: _silu, F.gelu: _gelu,
    torch.mean: _mean, F.interpolate: _interpolate,
}
METHODS = {
    "view": _reshape, "reshape": _reshape, "size": _size, "add": _binary("Add"),
    "flatten": lambda g, name, x, *a, **k: _flatten(g, x, name, *a, **k),
    "relu": _relu_fn, "contiguous": _identity, "unsqueeze": _unsqueeze, "mean": _mean,
    "sigmoid": _sigmoid, "tanh": _tanh, "mul": _binary("Mul"),
}


# -- the graph -------------------------------------------------------------------------------
def build_graph(model, input_shape=(3, 32, 32), float_weights=False):
    """The ``onnx.ModelProto`` of ``model``'s inference forward on ``(batch, *input_shape)``
    inputs, the batch dimension dynamic; raises ``ExportError`` naming a node without handler.
    The handlers that need a shape (adaptive pooling) read it off one forward pass at batch 1.

    ``float_weights``: every weight as the float32 tensor it dequantizes to (for the size
    comparison in ``benchmarks/onnx.py``).
    """
    assert model.form != "float", "a float model has no codes to export"
    g = _Graph(float_weights)
    traced = trace(model, training=False, consequence=(
        "so it has no ONNX graph (the export writes the traced forward pass): make its forward "
        "traceable, or export the packed file (--export) instead"))
    with torch.no_grad():  # each node's shape, for the handlers that need one
        device = next(model.parameters()).device
        ShapeProp(torch.fx.GraphModule(model, traced)).propagate(
            torch.zeros(1, *input_shape, device=device))
    values, output = {}, None
    for node in traced.nodes:
        args = _values(node.args, values)
        kwargs = _values(node.kwargs, values)
        name = node.name if node.op != "call_module" else node.target
        if node.op == "placeholder":
            if values:
                raise ExportError(f"the forward pass takes more than one input ({node.name})")
            values[node] = INPUT
        elif node.op == "call_module":
            module = model.get_submodule(node.target)
            handler = next((h for t, h in MODULES.items() if isinstance(module, t)), None)
            if handler is None:
                raise ExportError(f"{node.target} ({type(module).__name__}) has no ONNX handler")
            values[node] = handler(g, *args, module, name, **kwargs)
        elif node.op in ("call_function", "call_method"):
            table = FUNCTIONS if node.op == "call_function" else METHODS
            handler = table.get(node.target)
            if handler is None:
                what = getattr(node.target, "__name__", node.target)
                stack = node.meta.get("nn_module_stack") or {}
                where = next(reversed(stack.values()))[0] if stack else ""
                where = f"in the forward of {where or 'the network'}"
                raise ExportError(f"{node.name} {where}: {node.op} {what} has no ONNX handler "
                                  "(models/onnx.py: add one to FUNCTIONS or METHODS)")
            values[node] = handler(g, name, *args, **kwargs)
        elif node.op == "output":
            output = args[0]
        else:
            raise ExportError(f"{node.name}: {node.op} {node.target} has no ONNX handler")
        meta = node.meta.get("tensor_meta")
        if isinstance(values.get(node), str) and hasattr(meta, "shape"):
            g.shapes[values[node]] = tuple(meta.shape)
    if not isinstance(output, str):
        raise ExportError("the forward pass does not return one tensor")
    g.nodes.append(helper.make_node("Identity", [output], [OUTPUT]))
    classes = model.arch_spec.get("num_classes", "classes")
    graph = helper.make_graph(
        g.nodes, f"{model.arch_spec.get('arch', 'network')}_bsq",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", classes])],
        g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bsq-cifar")
    proto.ir_version = helper.find_min_ir_version_for(proto.opset_import)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _values(obj, values):
    """fx arguments with each node replaced by its graph value."""
    if isinstance(obj, torch.fx.Node):
        return values[obj]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_values(v, values) for v in obj)
    if isinstance(obj, dict):
        return {k: _values(v, values) for k, v in obj.items()}
    return obj


def graph_sizes(model, input_shape=(3, 32, 32)):
    """``(data, float_bytes, paper_bytes)``: the serialized graph of ``model``, the size of the
    same graph with float32 weights, and the paper's size TB/8."""
    data = build_graph(model, input_shape).SerializeToString()
    float_bytes = len(build_graph(model, input_shape, float_weights=True).SerializeToString())
    return data, float_bytes, model.size()[1] / 8


def session(data, threads=0):
    """An ONNX Runtime CPU session of the serialized model ``data`` (bytes) or a file path;
    ``threads``: its intra-op threads (0: ONNX Runtime's choice)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def logits(sess, x):
    """ONNX Runtime's logits (B, classes) of a float32 batch ``x`` (B, C, H, W), on the CPU."""
    return torch.from_numpy(sess.run([OUTPUT], {INPUT: _tensor(x.float())})[0])


@torch.no_grad()
def compare(model, other, loader):
    """``model`` in eval mode against ``other`` (a batch -> logits function, e.g.
    ``functools.partial(logits, sess)`` for an ONNX Runtime session), batch by batch over
    ``loader``: both test accuracies as ``utils.train.engine.evaluate`` computes them (percent),
    the share of images whose predicted class agrees (percent), the largest absolute logit
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
