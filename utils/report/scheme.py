"""The scheme report: per quantized tensor its precision, share of the bits and ones per plane,
then the model's totals; as text (``scheme_report``) and as data (``scheme.json``)."""
from utils.cli.console import times
from utils.quant.bits import FLOAT_BITS
from utils.store.files import write_json
from utils.train.distributed import is_main


def scheme_dict(model, acc=None):
    """The scheme report as data, the content of ``scheme.json``.

    ``layers``: one entry per quantized tensor, in module order: ``name``, ``tensor``
    (``"weight"`` or ``"bias"``), ``shape``, ``bits`` (its precision N), ``share`` (percent of TB)
    and ``ones`` (percent of nonzero bits ``p_i - n_i`` per plane, MSB first; None unless the
    model is in bits form). ``totals``: ``TP``, ``TB``, ``avg_bits`` (TB/TP), ``compression``
    (32 TP/TB; null when TB is 0) and ``acc`` (the test accuracy given, or None). ``scheme``: the
    release's ``Nbit_dict``. A float model counts 32 bits per weight, as ``model.size()`` does.
    """
    total, bits = model.size()
    layers = []
    for name, m in model.quant_layers():
        for slot, (numel, nbits) in zip(m.slots, m.sizes()):
            nbits = FLOAT_BITS if m.form == "float" else nbits
            layers.append({"name": name, "tensor": slot, "shape": list(m.shapes[slot]),
                           "bits": nbits, "share": 100 * numel * nbits / bits if bits else 0.0,
                           "ones": m.plane_ones(slot) if m.form == "bits" else None})
    return {"layers": layers,
            "totals": {"TP": total, "TB": bits, "avg_bits": bits / total,
                       "compression": model.compression(), "acc": acc},
            "scheme": model.scheme() if model.form != "float" else None}


def scheme_report(model, acc=None):
    """Per quantized tensor: shape, precision, percentage of ones per plane (MSB first), and the
    tensor's share of the model's bits; then TP, TB, average bits, compression and, when ``acc``
    is given, the test accuracy. The text form of ``scheme_dict``."""
    report = scheme_dict(model, acc)
    rows = [(row["name"] if row["tensor"] == "weight" else f"{row['name']} (bias)",
             "x".join(str(d) for d in row["shape"]), row) for row in report["layers"]]
    wide = max([18, *(len(label) for label, _, _ in rows)])  # a column as wide as the names
    lines = [f"{'layer':<{wide}} {'shape':<18} {'bits':>4} {'share':>6}  ones per plane, MSB "
             "first (%)"]
    for label, shape, row in rows:
        ones = "-" if row["ones"] is None else " ".join(f"{v:5.1f}" for v in row["ones"])
        lines.append(f"{label:<{wide}} {shape:<18} {row['bits']:>4} {row['share']:5.1f}%  {ones}")
    totals = report["totals"]
    line = (f"TP {totals['TP']} weights, TB {totals['TB']} bits, {totals['avg_bits']:.3f} bits per "
            f"weight, compression {times(totals['compression'])}")
    lines.append(line if acc is None else f"{line}, test accuracy {acc:.2f}%")
    return "\n".join(lines)


def write_scheme_json(model, path, acc=None):
    """Write ``scheme_dict(model, acc)`` to ``path`` (``scheme.json`` beside a checkpoint) and
    return it. Under torchrun only rank 0 writes."""
    report = scheme_dict(model, acc)
    if is_main():
        write_json(report, path)
    return report
