"""Which activations are quantized, and that the report says so: the stem rule (the first
activation call site of any kind is the stem's, plain only when it is a ReLU or ReLU6) and the
activation report of the scheme report, ``scheme.json`` and the notice of ``load_model``."""
from models import build_model, load_model
from models.activation import ActQuantizer
from utils.report.scheme import scheme_dict, scheme_report


def quantizer_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, ActQuantizer)]


def test_the_release_resnet_reports_its_plain_stem_and_every_block_activation_quantized():
    model = build_model("resnet", depth=8, act=4)
    rows = model.activation_report()
    assert rows[0] == {"site": "relu", "kind": "ReLU", "bits": None, "why": "the stem's"}
    assert [r["site"] for r in rows[1:]] == quantizer_names(model)  # the module of each
    assert {r["bits"] for r in rows[1:]} == {4}
    text = scheme_report(model.to_bits_(8))
    assert "activations: 6 of 7 call sites quantized" in text
    assert "layer3.0.relu2 ReLU         4 bits" in text


def test_float_stem_false_quantizes_the_stem_too():
    from models import make_bit_model, quantize_activations_, to_bit_layers_
    from models.cifar.resnet import ResNet

    net = ResNet(8, 10)
    to_bit_layers_(net)
    forward = quantize_activations_(net, lambda: ActQuantizer(4), float_stem=False)
    model = make_bit_model(net, {"arch": "resnet", "num_classes": 10, "act": 4}, forward=forward)
    rows = model.activation_report()
    assert rows[0]["site"] == "relu" and rows[0]["bits"] == 4 and rows[0]["why"] is None
    assert len(quantizer_names(model)) == len(rows) == 7


def test_a_silu_stem_leaves_every_relu_after_it_quantized():
    model = build_model("nets:silu_stem", act=3)
    rows = model.activation_report()
    assert rows[0]["kind"] == "silu" and rows[0]["bits"] is None
    assert "not a ReLU" in rows[0]["why"]
    relus = [r for r in rows if r["kind"] in ("ReLU", "relu")]
    assert len(relus) == 2 and all(r["bits"] == 3 for r in relus)  # the stem rule took none
    assert [r["site"] for r in relus] == quantizer_names(model)


def test_a_network_without_relus_quantizes_nothing_and_says_so(capsys):
    model, _ = load_model(arch="nets:silu_net", num_classes=10, act=4, inputs=[(3, 32, 32)])
    rows = model.activation_report()
    assert [(r["kind"], r["bits"]) for r in rows] == [("SiLU", None), ("sigmoid", None)]
    assert not quantizer_names(model)
    notice = capsys.readouterr().out.strip()
    assert notice.startswith("--act 4 quantizes no activation of -a nets:silu_net")
    assert "SiLU, sigmoid" in notice
    assert scheme_dict(model.to_bits_(4))["activations"] == rows


def test_act_0_is_reported_as_activations_left_alone():
    assert build_model("nets:tiny", act=0).activation_report() == []
    assert "left as the network has them (--act 0)" in scheme_report(
        build_model("nets:tiny", act=0).to_bits_(4))
    rows = build_model("resnet", depth=8, act=0).activation_report()  # the release's PACT clip
    assert rows[1]["bits"] is None and rows[1]["why"] == "--act 0: no quantizer"
