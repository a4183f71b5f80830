"""The scheme report: per quantized tensor its precision, share of the bits and ones per plane,
then the model's totals; as text (``scheme_report``) and as data (``scheme.json``).

An empty tensor (every bit plane zero) is marked. The release counts it at 1 bit per weight in
bits form (this report, ``scheme.json``) and at 0 bits in finetune form (``cifar_finetune.py``'s
``log.txt``; README, "What --corrected changes", row 3), so where that changes the compression
the report gives both and says which is which (``finetune_note``).
"""
import os

from utils.quant.bits import FLOAT_BITS
from utils.ranks import is_main
from utils.report.console import times
from utils.store.files import write_json

FINETUNE_SOURCES = "cifar_finetune.py's log.txt, curves.png, TensorBoard's epoch rows"
BITS_SOURCES = "this report, scheme.json, precision.png, the final JSON line"


def scheme_dict(model, acc=None):
    """The scheme report as data, the content of ``scheme.json``.

    ``layers``: one entry per quantized tensor, in module order: ``name``, ``tensor``
    (``"weight"`` or ``"bias"``), ``shape``, ``bits`` (its precision N), ``share`` (percent of TB),
    ``ones`` (percent of nonzero bits ``p_i - n_i`` per plane, MSB first; None unless the
    model is in bits form) and ``empty`` (every plane zero: the tensor is all zero). ``totals``:
    ``TP``, ``TB``, ``avg_bits`` (TB/TP), ``compression`` (32 TP/TB; null when TB is 0), ``acc``
    (the test accuracy given, or None), ``empty`` (the number of empty tensors) and
    ``finetune_form``: ``TB``, ``avg_bits`` and ``compression`` as finetune form counts them,
    where the release puts an empty 1-bit tensor at precision 0 (null for a float model).
    ``scheme``: the release's ``Nbit_dict``. ``activations``: each activation call site, its
    kind and the precision of its quantizer or why it stays float (``activation_report``).
    ``costs``: each conv and linear's MACs per image, weight and input activation bits and
    bit-operations (``model.costs()``), with ``MACs`` and ``BOPs`` (their sums) in ``totals``. A
    float model counts 32 bits per weight, as ``model.size()`` does.
    """
    total, bits = model.size()
    layers, finetune_bits = [], 0
    for name, m in model.quant_layers():
        for slot, (numel, nbits) in zip(m.slots, m.sizes()):
            empty = m.form != "float" and not bool(m.code(slot).any())
            nbits = FLOAT_BITS if m.form == "float" else nbits
            finetune_bits += 0 if empty and nbits == 1 and m.form == "bits" else numel * nbits
            layers.append({"name": name, "tensor": slot, "shape": list(m.shapes[slot]),
                           "bits": nbits, "share": 100 * numel * nbits / bits if bits else 0.0,
                           "ones": m.plane_ones(slot) if m.form == "bits" else None,
                           "empty": empty})
    finetune = None if model.form == "float" else {
        "TB": finetune_bits, "avg_bits": finetune_bits / total,
        "compression": FLOAT_BITS * total / finetune_bits if finetune_bits else float("inf")}
    costs = model.costs()
    return {"layers": layers, "activations": model.activation_report(), "costs": costs,
            "totals": {"TP": total, "TB": bits, "avg_bits": bits / total,
                       "compression": model.compression(), "acc": acc,
                       "empty": sum(row["empty"] for row in layers), "finetune_form": finetune,
                       "MACs": sum(row["macs"] for row in costs),
                       "BOPs": sum(row["bops"] for row in costs)},
            "scheme": model.scheme() if model.form != "float" else None}


def finetune_note(report):
    """Why finetune form counts fewer bits than ``report`` (a ``scheme_dict``), naming where each
    figure is shown; "" when both count the same."""
    totals = report.get("totals") or {}
    finetune = totals.get("finetune_form")
    if not finetune or finetune["TB"] == totals["TB"]:
        return ""
    zeroed = sum(1 for row in report["layers"] if row.get("empty") and row["bits"] == 1)
    return (f"the {zeroed} empty tensors count 1 bit per weight here, as the release counts them "
            f"in bits form ({BITS_SOURCES}); in finetune form they count 0 bits: "
            f"{finetune['avg_bits']:.3f} bits per weight, compression "
            f"{times(finetune['compression'])} ({FINETUNE_SOURCES}; README, \"What --corrected "
            "changes\", row 3)")


def scheme_report(model, acc=None):
    """Per quantized tensor: shape, precision, percentage of ones per plane (MSB first), and the
    tensor's share of the model's bits, an empty tensor marked; then each activation call site
    and its quantizer (``activation_lines``); then each conv and linear's bit-operations
    (``cost_lines``); then TP, TB, average bits, compression, MACs and BOPs per image and, when
    ``acc`` is given, the test accuracy; then ``finetune_note``. The text form of
    ``scheme_dict``."""
    report = scheme_dict(model, acc)
    rows = [(row["name"] if row["tensor"] == "weight" else f"{row['name']} (bias)",
             "x".join(str(d) for d in row["shape"]), row) for row in report["layers"]]
    wide = max([18, *(len(label) for label, _, _ in rows)])  # a column as wide as the names
    lines = [f"{'layer':<{wide}} {'shape':<18} {'bits':>4} {'share':>6}  ones per plane, MSB "
             "first (%)"]
    for label, shape, row in rows:
        ones = "-" if row["ones"] is None else " ".join(f"{v:5.1f}" for v in row["ones"])
        mark = "  empty: every plane zero" if row["empty"] else ""
        lines.append(f"{label:<{wide}} {shape:<18} {row['bits']:>4} {row['share']:5.1f}%  "
                     f"{ones}{mark}".rstrip())
    lines += activation_lines(report["activations"])
    lines += cost_lines(report["costs"])
    totals = report["totals"]
    line = (f"TP {totals['TP']} weights, TB {totals['TB']} bits, {totals['avg_bits']:.3f} bits per "
            f"weight, compression {times(totals['compression'])}, {count(totals['MACs'])} MACs "
            f"and {count(totals['BOPs'])} BOPs per image")
    lines.append(line if acc is None else f"{line}, test accuracy {acc:.2f}%")
    note = finetune_note(report)
    return "\n".join([*lines, note[0].upper() + note[1:]] if note else lines)


def cost_lines(costs):
    """The bit-operations of ``model.costs()`` as a table: per conv and linear its MACs per image,
    weight bits x input activation bits (32: float), its BOPs and their share."""
    total = sum(row["bops"] for row in costs) or 1
    wide = max([5, *(len(row["layer"]) for row in costs)])
    lines = ["bit-operations per image (BOPs = MACs x weight bits x activation bits):",
             f"{'layer':<{wide}} {'MACs':>8} {'w x a bits':>10} {'BOPs':>8} {'share':>6}"]
    lines += [f"{row['layer']:<{wide}} {count(row['macs']):>8} "
              f"{row['weight_bits']:>4} x {row['act_bits']:<3} {count(row['bops']):>8} "
              f"{100 * row['bops'] / total:5.1f}%" + ("" if row["quantized"] else "  float layer")
              for row in costs]
    return lines


def count(n):
    """``n`` for people: ``40.81M``, ``1.959G``, ``640``."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return f"{n:g}"


def activation_lines(sites):
    """The activation call sites of ``activation_report`` as a table: site, kind, and its
    quantizer's precision or why it stays float."""
    if not sites:
        return ["activations: left as the network has them (--act 0)"]
    quantized = sum(row["bits"] is not None for row in sites)
    wide = max(len(row["site"]) for row in sites)
    lines = [f"activations: {quantized} of {len(sites)} call sites quantized",
             f"{'call site':<{wide}} {'kind':<12} quantizer"]
    lines += [f"{row['site']:<{wide}} {row['kind']:<12} "
              + (f"{row['bits']} bits" if row["bits"] is not None else f"float: {row['why']}")
              for row in sites]
    return lines


def report_scheme(model, folder, acc=None):
    """The end of a run that writes a bit model: ``scheme_report(model, acc)`` on stdout and
    ``scheme_dict(model, acc)`` as ``folder/scheme.json``, which it returns. Under torchrun only
    rank 0 writes."""
    print(scheme_report(model, acc))
    report = scheme_dict(model, acc)
    if is_main():
        write_json(report, os.path.join(folder, "scheme.json"))
    return report
