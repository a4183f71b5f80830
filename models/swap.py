"""The one swap that turns any network into a bit network: its convs and linears become bit
layers, and each call site of its activations gets its own activation quantizer.

``to_bit_layers_`` replaces every ``nn.Conv2d`` and ``nn.Linear`` of a module tree (exact types,
so that a subclass with its own forward is left alone) by ``BitConv2d.from_conv`` /
``BitLinear.from_linear``, which keep every attribute of the layer and its weight and bias as
they are; include and exclude rules select layers by name pattern (``fnmatch``) and by type.

``quantize_activations_`` gives every call site of a ReLU or ReLU6 (a module, ``F.relu``,
``torch.relu``, ``F.relu6``, ``x.relu()``) its own quantizer, **except the stem's**: the first
activation call site of the forward pass, of any kind, is the stem's, and stays float when it is
a ReLU or ReLU6 (the rule of the release's ResNet, whose stem ReLU is plain, written here once
for every network); when the stem's activation is another kind (SiLU, Hardswish), every ReLU and
ReLU6 gets a quantizer. It finds the call sites with ``torch.fx`` (bit layers and quantizers are
leaves), in train and in eval mode. A quantizer replaces the activation it stands for:

- an activation module called once is replaced in place by its quantizer, under its own name
  (so the release's ResNet keeps its ``layerK.B.relu1`` names and parameter order);
- an activation module called k > 1 times becomes a ``ModuleDict`` of one quantizer per call,
  ``name.0`` .. ``name.{k-1}`` (the first call keeps the module itself when it is the stem's);
- functional activations inside a module M get quantizers ``M.act.0``, ``M.act.1``, ...

Only in the last two cases does the forward pass change: it becomes the code of the traced graph
with each call site rewired to its quantizer, one graph per mode (train, eval), so that code that
depends on ``self.training`` (dropout, auxiliary heads) keeps doing so. Other activations (SiLU,
GELU, ...) stay float.
"""
import fnmatch
import functools

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import BSQError
from utils.quant.corrections import CORRECTED

from .activation import ActQuantizer
from .bitlayer import BitConv2d, BitLayer, BitLinear

SWAPS = {nn.Conv2d: BitConv2d.from_conv, nn.Linear: BitLinear.from_linear}
ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6)
ACTIVATION_FUNCTIONS = (F.relu, F.relu6, torch.relu, torch.relu_, F.relu_)
ACTIVATION_METHODS = ("relu", "relu_")
# Activations BSQ leaves float; the first call site of any activation is the stem's
OTHER_MODULES = (nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.Sigmoid, nn.Tanh, nn.ELU,
                 nn.LeakyReLU, nn.PReLU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh)
OTHER_FUNCTIONS = (F.silu, F.hardswish, F.hardsigmoid, F.gelu, torch.sigmoid, F.sigmoid,
                   torch.tanh, F.tanh, F.elu, F.leaky_relu, F.prelu, F.selu, F.celu, F.mish,
                   F.softplus, F.hardtanh)
OTHER_METHODS = ("sigmoid", "tanh", "sigmoid_", "tanh_")
FUNCTIONAL_SITES = "act"  # the ModuleDict holding a module's functional call sites' quantizers
# The 1x1 shortcut convs of a ResNet as the release and torchvision name them: float in the
# release's ResNet (neither quantized nor counted in TP/TB), and so in torchvision's ResNets
SHORTCUTS = "*.downsample.*"


class CallSites(nn.ModuleDict):
    """The quantizers of one activation's call sites, by call number: ``"0"``, ``"1"``, ..."""


class TraceError(BSQError):
    """A network whose forward pass ``torch.fx`` cannot trace."""


def to_bit_layers_(net, *, include=("*",), exclude=(), types=tuple(SWAPS), nbits=8,
                   corrections=CORRECTED):
    """Replace, in place, every layer of ``net`` whose type is one of ``types`` (``nn.Conv2d``,
    ``nn.Linear``) and whose qualified name matches a pattern of ``include`` and none of
    ``exclude`` by its bit layer, in float form. Returns the names replaced, in module order."""
    chosen = [(name, m) for name, m in net.named_modules()
              if type(m) in types and _matches(name, include) and not _matches(name, exclude)]
    for name, m in chosen:
        _set_child(net, name, SWAPS[type(m)](m, nbits=nbits, corrections=corrections))
    return [name for name, _ in chosen]


def quantize_activations_(net, quantizer, float_stem=True):
    """Give each ReLU/ReLU6 call site of ``net`` but the stem's its own ``quantizer()`` (see the
    module docstring). ``float_stem``: the stem's stays float, the rule of every network here (as
    the release keeps its ResNet's stem ReLU plain, and as quantization work commonly keeps the
    first layer's activations at full precision); False quantizes it too. ``net`` is changed in
    place, and ``net.activation_sites`` lists every activation call site, quantized or not and
    why (``_activation_report``). Returns the forward function the network needs now
    (``forward(self, *inputs)``), or None when its own forward still holds."""
    graphs = {mode: trace(net, mode) for mode in (True, False)}
    sites = {mode: _sites(graph, net) for mode, graph in graphs.items()}
    order = [key for key, _ in sites[True]] + [key for key, _ in sites[False]]
    kinds = {node: _activation_kind(node, net) for node in graphs[True].nodes}  # before swaps
    if not order:
        net.activation_sites = _activation_report(graphs[True], kinds, [], {}, None)
        return None
    first = bool(sites[True])  # the train graph's sites, unless only eval mode has any
    stem_first = float_stem and _first_activation(graphs[first], net) is sites[first][0][1]
    stem = order[0] if stem_first else None
    calls = {}  # module name -> number of calls (max over the modes)
    for mode in graphs:
        for (kind, path, _), _ in sites[mode]:
            if kind == "module":
                calls[path] = max(calls.get(path, 0), _count(sites[mode], path))
    rewire = {}  # site key -> target module name in the rewritten graph
    holders = {}  # module path -> the name of its functional sites' quantizers
    for key in dict.fromkeys(order):
        kind, path, index = key
        if kind == "module" and calls[path] == 1:
            if key != stem:
                _set_child(net, path, quantizer())
            continue
        if kind == "function" and key == stem:
            continue  # the stem's functional ReLU stays as it is
        if kind == "module":
            holder = path
            if not isinstance(net.get_submodule(path), CallSites):
                _set_child(net, path, CallSites({"0": net.get_submodule(path)}))
        elif path not in holders:
            holder = holders[path] = _free_name(net, path)
            _set_child(net, holder, CallSites())
        else:
            holder = holders[path]
        container = net.get_submodule(holder)
        if key != stem:
            container[str(index)] = quantizer()
        elif str(index) not in container:
            container[str(index)] = container["0"]
        rewire[key] = f"{holder}.{index}"
    net.activation_sites = _activation_report(graphs[True], kinds, sites[True], rewire, stem)
    if not rewire:
        return None
    forwards = {mode: _compiled(_rewired(graphs[mode], sites[mode], rewire))
                for mode in graphs}
    return _dual_forward(forwards[True], forwards[False])


# -- tracing ---------------------------------------------------------------------------------
class _Tracer(fx.Tracer):
    """Bit layers and quantizers are leaves; so are torch.nn's own modules (fx's default)."""

    def is_leaf_module(self, m, qualified_name):
        return isinstance(m, (BitLayer, ActQuantizer)) or super().is_leaf_module(m, qualified_name)


QUANTIZERS_NEED_A_TRACE = ("so its activations cannot get quantizers: make its forward "
                           "traceable, or pass --act 0")


def trace(net, training, consequence=QUANTIZERS_NEED_A_TRACE):
    """The fx graph of ``net``'s forward pass in train or eval mode (``TraceError`` when it
    cannot be traced, its message ending with ``consequence``: what the trace was for, and the
    fix)."""
    was = net.training
    net.train(training)
    try:
        return _Tracer().trace(net)
    except Exception as e:  # fx raises many kinds; one line names it
        raise TraceError(f"torch.fx cannot trace the network's forward pass in "
                         f"{'train' if training else 'eval'} mode ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}), {consequence}") from None
    finally:
        net.train(was)


def _sites(graph, net):
    """``[((kind, path, index), node)]``: each activation call site in graph order; kind
    ``"module"`` (path: the module, index: its call number) or ``"function"`` (path: the module
    whose forward calls it, index: its number among that module's functional sites)."""
    found, counts = [], {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(net.get_submodule(node.target),
                                                   ACTIVATION_MODULES):
            key = ("module", node.target)
        elif ((node.op == "call_function" and node.target in ACTIVATION_FUNCTIONS)
              or (node.op == "call_method" and node.target in ACTIVATION_METHODS)):
            stack = node.meta.get("nn_module_stack") or {}
            key = ("function", next(reversed(stack.values()))[0] if stack else "")
        else:
            continue
        index = counts.get(key, 0)
        counts[key] = index + 1
        found.append(((*key, index), node))
    return found


def _activation_kind(node, net):
    """The name of the activation ``node`` calls, of any kind (``ReLU``, ``silu``, ...), or
    None."""
    if node.op == "call_module":
        module = net.get_submodule(node.target)
        return type(module).__name__ if isinstance(module, ACTIVATION_MODULES + OTHER_MODULES) \
            else None
    if node.op == "call_function" and node.target in ACTIVATION_FUNCTIONS + OTHER_FUNCTIONS:
        return node.target.__name__
    if node.op == "call_method" and node.target in ACTIVATION_METHODS + OTHER_METHODS:
        return node.target
    return None


def _first_activation(graph, net):
    """The first node of ``graph`` that calls an activation of any kind (None if none does)."""
    return next((node for node in graph.nodes if _activation_kind(node, net)), None)


def _activation_report(graph, kinds, sites, rewire, stem):
    """Each activation call site of ``graph`` (train mode), in order: ``{"site", "kind",
    "why"}``, ``site`` the quantizer's module name where it has one, else the module (and
    function) that calls it; ``why`` says why a site stays float (None: it is quantized).
    ``kinds``: each node's ``_activation_kind``, taken before any module was swapped."""
    keys = {node: key for key, node in sites}
    rows = []
    for node in graph.nodes:
        kind = kinds.get(node)
        if kind is None:
            continue
        key = keys.get(node)
        if node.op == "call_module":
            where = node.target
        else:
            stack = node.meta.get("nn_module_stack") or {}
            where = f"{next(reversed(stack.values()))[0] if stack else 'forward'} ({kind})"
        if key is None:
            rows.append({"site": where, "kind": kind,
                         "why": "not a ReLU or ReLU6, which BSQ quantizes"})
        elif key == stem:
            rows.append({"site": where, "kind": kind, "why": "the stem's"})
        else:
            rows.append({"site": rewire.get(key, key[1]), "kind": kind, "why": None})
    return rows


def _count(sites, path):
    return sum(1 for (kind, p, _), _ in sites if kind == "module" and p == path)


def _rewired(graph, sites, rewire):
    """``graph`` with each site in ``rewire`` calling its module there instead."""
    nodes = {node: key for key, node in sites}
    for node, key in nodes.items():
        if key not in rewire:
            continue
        x = node.args[0] if node.args else node.kwargs["input"]
        with graph.inserting_after(node):
            new = graph.call_module(rewire[key], (x,))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.lint()
    return graph


def _compiled(graph):
    """The Python function of ``graph``'s code: ``forward(self, *inputs)``."""
    code = graph.python_code(root_module="self")
    scope = dict(code.globals)
    exec(compile(code.src, "<bit network forward>", "exec"), scope)  # noqa: S102 (our own code)
    return scope["forward"]


def _dual_forward(train, evaluate):
    """``train`` in train mode, ``evaluate`` in eval mode; with their signature (``__wrapped__``),
    so that ``torch.fx`` can trace the network again (the ONNX export does)."""
    @functools.wraps(train)
    def forward(self, *inputs, **kwargs):
        return (train if self.training else evaluate)(self, *inputs, **kwargs)
    return forward


# -- module tree ---------------------------------------------------------------------------
def _matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _join(*parts):
    return ".".join(p for p in parts if p)


def _free_name(net, path):
    """``path.act``, or ``path.act_1``, ... when that name is taken."""
    for suffix in ("", *(f"_{i}" for i in range(1, 100))):
        name = _join(path, FUNCTIONAL_SITES + suffix)
        if not _has(net, name):
            return name
    raise ValueError(f"no free name for the activation quantizers of {path or 'the network'}")


def _has(net, name):
    try:
        net.get_submodule(name)
        return True
    except AttributeError:
        return False


def _set_child(net, name, module):
    """Put ``module`` at the qualified ``name`` of ``net`` (its parent must exist), in the place
    of the module there, if any."""
    parent, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, child, module)
