"""The ONNX graph (models/onnx.py): integer codes that dequantize to the checkpoint's weights bit
for bit, the activation quantizer in the model's fp32 order, and ONNX Runtime's logits against
PyTorch's for every form, activation and a mixed scheme."""
import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from models import build_model, load_model
from models import onnx as graph
from models.activation import ActQuantizer
from utils.quant.corrections import CORRECTED, RELEASE

from helpers import mixed_model, release_layout

# Within a conv, ONNX Runtime (MLAS) sums in another order than PyTorch: logits differ by a few
# fp32 ulps (measured: up to 5e-7 here). TOL is 200x that; a rounding of the activation
# quantizer that flips moves a logit by far more, so this also says none flipped.
TOL = 1e-4
CODE_TYPES = {onnx.TensorProto.INT4: 3, onnx.TensorProto.INT8: 7, onnx.TensorProto.INT16: 8}


def scheme_model(act=4, num_classes=10, bits=(0, 1, 3, 4, 5, 8), corrections=CORRECTED):
    """A ResNet-8 whose layers take the precisions ``bits`` in turn, random BN statistics."""
    torch.manual_seed(2)
    model = build_model(depth=8, act=act, num_classes=num_classes, corrections=corrections)
    layers = model.quant_layers()
    model.to_bits_({name: [bits[i % len(bits)], bits[-1 - i % len(bits)]]
                    for i, (name, _) in enumerate(layers)})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def codes(proto):
    """``{layer.slot: initializer}`` of the integer codes in ``proto``."""
    return {t.name.rsplit(".code", 1)[0]: t for t in proto.graph.initializer if ".code" in t.name}


def weights_through_ort(proto, names):
    """ONNX Runtime's values of the weights ``names`` (the dequantized tensors the convs and the
    classifier read), by adding them to the graph's outputs."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    produced = {n.output[0].rsplit("_", 1)[0]: n.output[0] for n in proto.graph.node}
    for name in names:
        proto.graph.output.append(helper.make_empty_tensor_value_info(produced[name]))
    sess = graph.session(proto.SerializeToString())
    outputs = [produced[n] for n in names]
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    return dict(zip(names, sess.run(outputs, {graph.INPUT: x})))


@pytest.mark.parametrize("form,continuous", [("bits", False), ("bits", True),
                                             ("finetune", False)])
def test_the_codes_dequantize_to_the_models_weights_bit_for_bit(form, continuous):
    model = mixed_model(form=form, continuous=continuous).eval()
    proto = graph.build_graph(model)
    stored = codes(proto)
    used = {f"{name}.{slot}": (m, slot) for name, m in model.quant_layers() for slot in m.slots}
    assert stored.keys() == {k for k, (m, s) in used.items() if m.nbits[s]}
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for key, tensor in stored.items():
        m, slot = used[key]
        code = numpy_helper.to_array(tensor).astype(np.int64)
        assert np.array_equal(code, m.code(slot).numpy())
        scale = next(v for k, v in init.items() if k.startswith(f"{key}.scale"))
        levels = np.float32(2 ** m.nbits[slot] - 1)
        assert torch.equal(torch.from_numpy(code.astype(np.float32) / levels * scale),
                           m.quantized(slot))
    through = weights_through_ort(proto, list(used))
    for key, (m, slot) in used.items():  # precision 0 included: a zero constant
        assert torch.equal(torch.from_numpy(through[key]), m.quantized(slot)), key


def test_each_code_has_the_narrowest_integer_type_that_holds_it():
    model = scheme_model(bits=(0, 1, 2, 3, 4, 5, 7, 8))
    stored = codes(graph.build_graph(model))
    for name, m in model.quant_layers():
        for slot in m.slots:
            nbits, key = m.nbits[slot], f"{name}.{slot}"
            if nbits == 0:
                assert key not in stored
                continue
            kind = stored[key].data_type
            assert CODE_TYPES[kind] >= nbits > {3: 0, 7: 3, 8: 7}[CODE_TYPES[kind]], (key, kind)
            code = numpy_helper.to_array(stored[key]).astype(int)
            assert int(np.abs(code).max()) <= 2 ** nbits - 1
    int4 = [k for k, t in stored.items() if t.data_type == onnx.TensorProto.INT4]
    assert int4 and all(model.get_submodule(k.rsplit(".", 1)[0]).nbits[k.rsplit(".", 1)[1]] <= 3
                        for k in int4)
    assert graph.code_type(3) is ml_dtypes.int4 and graph.code_type(4) is np.int8


def test_int4_codes_are_packed_two_to_a_byte():
    model = scheme_model(bits=(3,))
    for tensor in codes(graph.build_graph(model)).values():
        assert len(tensor.raw_data) == -(-int(np.prod(tensor.dims)) // 2)


@pytest.mark.parametrize("act", [4, 3, 2, 0])
def test_the_activation_quantizer_is_the_models_bit_for_bit(act):
    quantizer = ActQuantizer(act)
    if act <= 3:
        quantizer.alpha.data.fill_(1.7)
    g = graph._Graph()
    out = graph._act_quantizer(g, "x", quantizer, "act")
    proto = helper.make_model(helper.make_graph(
        g.nodes, "act", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)], g.initializers),
        opset_imports=[helper.make_opsetid("", graph.OPSET)])
    sess = graph.session(proto.SerializeToString())
    torch.manual_seed(act)
    for x in (torch.randn(4, 16, 8, 8) * 3, torch.zeros(2, 3, 4, 4), torch.rand(5, 7) * 9):
        with torch.no_grad():
            ours = quantizer(x)
        theirs = torch.from_numpy(sess.run([out], {"x": x.numpy()})[0])
        assert torch.equal(ours, theirs)
    if act:
        assert {n.op_type for n in g.nodes} >= {"ReduceMax", "Round"}
    else:
        assert "Round" not in {n.op_type for n in g.nodes}


CASES = {"relu6": dict(act=4), "pact": dict(act=2), "no quantizer": dict(act=0),
         "cifar100": dict(num_classes=100), "release": dict(corrections=RELEASE)}


@pytest.mark.parametrize("form", ["bits", "finetune"])
@pytest.mark.parametrize("case", list(CASES))
def test_onnx_runtime_computes_the_models_logits(case, form):
    model = scheme_model(**CASES[case])
    if form == "finetune":
        model.to_finetune_()
    proto = graph.build_graph(model)
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"  # dynamic
    sess = graph.session(proto.SerializeToString())
    torch.manual_seed(0)
    for n in (1, 8):
        x = torch.randn(n, 3, 32, 32)
        with torch.no_grad():
            ours = model(x)
        theirs = graph.logits(sess, x)
        assert theirs.shape == (n, model.arch_spec["num_classes"])
        assert torch.allclose(theirs, ours, rtol=0, atol=TOL), (theirs - ours).abs().max()


def test_the_release_finetune_form_leaves_the_classifier_bias_out():
    model = scheme_model(corrections=RELEASE).to_finetune_()
    gemm = next(n for n in graph.build_graph(model).graph.node if n.op_type == "Gemm")
    assert len(gemm.input) == 2
    model = scheme_model(corrections=CORRECTED).to_finetune_()
    gemm = next(n for n in graph.build_graph(model).graph.node if n.op_type == "Gemm")
    assert len(gemm.input) == 3


def test_float_weights_export_the_same_function_at_float32():
    model = scheme_model()
    ints, floats = graph.build_graph(model), graph.build_graph(model, float_weights=True)
    assert not codes(floats) and len(floats.SerializeToString()) > len(ints.SerializeToString())
    x = torch.randn(4, 3, 32, 32)
    a = graph.logits(graph.session(ints.SerializeToString()), x)
    b = graph.logits(graph.session(floats.SerializeToString()), x)
    assert torch.allclose(a, b, rtol=0, atol=TOL)


@pytest.mark.parametrize("form", ["bits", "finetune"])
def test_a_checkpoint_in_the_releases_layout_exports_its_forward(tmp_path, form):
    model = mixed_model(act=2, form=form, corrections=RELEASE).eval()
    path = tmp_path / "release.pth.tar"
    torch.save(release_layout(model), path)
    loaded, _ = load_model(str(path), depth=8, act=2, corrections=RELEASE)
    sess = graph.session(graph.build_graph(loaded.eval()).SerializeToString())
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        ours = model(x)
    assert torch.allclose(graph.logits(sess, x), ours, rtol=0, atol=TOL)


def test_an_untraceable_forward_is_refused_with_the_fix_for_what_needed_the_trace():
    """Activation quantizers need the trace (the fix: --act 0); with --act 0 the network trains,
    and only its ONNX export needs the trace (the fix: the packed file)."""
    from models.swap import TraceError
    with pytest.raises(TraceError, match="cannot get quantizers: .* or pass --act 0"):
        build_model("nets:untraceable", act=4)
    model = build_model("nets:untraceable", act=0).to_bits_(4)
    with pytest.raises(TraceError, match="no ONNX graph .* packed file \\(--export\\)") as e:
        graph.build_graph(model)
    assert "--act 0" not in str(e.value)


@pytest.mark.parametrize("arch", ["nets:zoo", "mobilenet_v3_small"])
def test_the_calls_model_code_writes_export_and_run_as_the_model(arch):
    """A squeeze-excitation gate with torch.sigmoid, F.hardswish and F.silu, means, nearest and
    bilinear interpolation, LayerNorm and GELU (``tests/nets.py:Zoo``), and torchvision's
    MobileNetV3-small (Hardswish, Hardsigmoid gates), in finetune form: ONNX Runtime's logits
    are the model's, every ReLU call site quantized."""
    torch.manual_seed(0)
    model = build_model(arch, act=4).to_bits_(6).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    model.to_finetune_()
    relus = [r["bits"] for r in model.activation_report() if r["kind"].lower() == "relu"]
    assert relus and set(relus) == {4}
    proto = graph.build_graph(model)
    ops = {n.op_type for n in proto.graph.node}
    assert ops >= ({"HardSwish", "Sigmoid", "ReduceMean", "Resize", "LayerNormalization", "Gelu"}
                   if arch == "nets:zoo" else {"HardSwish", "HardSigmoid"})
    sess = graph.session(proto.SerializeToString())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ours = model(x)
    theirs = graph.logits(sess, x)
    assert torch.allclose(theirs, ours, rtol=0, atol=TOL), (theirs - ours).abs().max()


def test_a_call_without_handler_is_named_with_the_module_whose_forward_makes_it():
    class Block(torch.nn.Module):
        def forward(self, x):
            return torch.erf(x)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.block = torch.nn.Conv2d(3, 4, 3), Block()
            self.head = torch.nn.Linear(4, 10)

        def forward(self, x):
            return self.head(self.block(self.conv(x)).mean((2, 3)))

    from models.bitmodel import make_bit_model
    from models.swap import to_bit_layers_
    net = Net()
    to_bit_layers_(net)
    model = make_bit_model(net, {"arch": "net", "num_classes": 10, "act": 0}).to_bits_(4).eval()
    with pytest.raises(graph.ExportError, match="in the forward of block: call_function erf has "
                                                "no ONNX handler"):
        graph.build_graph(model)
