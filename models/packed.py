"""A BSQ model to and from its packed file (the format is ``utils/store/packedfile.py``'s).

Each quantized tensor is stored as the integer code its forward pass uses,
``code = sign(w) round(|clip(w, -1, 1)| (2^N - 1))`` (so ``W = scale * code / (2^N - 1)``), at
its own precision N; everything else in the state dict is stored as it is. The model is
rebuilt in bits form with exact 0/1 planes, so its forward pass computes the same weights, bit
for bit, as the model that was exported, whether that was in bits (exact or continuous) or
finetune form. A tensor the forward pass leaves out (the classifier bias in the release's
finetune form) is not stored and comes back at precision 0, zero.
"""
import torch

from utils.quant.bits import FLOAT_BITS, encode
from utils.store.checkpoint import NAMES, checkpoint_state
from utils.store.packedfile import PackedFileError, read_packed, write_packed

from .build import build_model

FLOAT_BYTES = FLOAT_BITS // 8


def float_tensors(model):
    """The state-dict entries outside the bit layers: BatchNorm, float convs, PACT's alphas."""
    owned = {k for name, m in model.quant_layers() for k in m.state_dict(prefix=f"{name}.")}
    return {k: v for k, v in model.state_dict().items() if k not in owned}


def packed_tensors(model):
    """``(quantized, floats)`` for ``write_packed``: ``[(name, code, N, scale)]`` of every
    quantized tensor, and ``float_tensors(model)``."""
    quantized = [(f"{name}.{slot}", m.code(slot).cpu(), m.nbits[slot], m.scale_of(slot))
                 for name, m in model.quant_layers() for slot in m.slots if m.uses(slot)]
    return quantized, float_tensors(model)


# What a packed file's "model" holds besides the network's arch_spec
DESCRIBED = ("checkpoint", "acc", "input_shape", "macs", "bops")


def pack(model, path, checkpoint=None, acc=None):
    """Write ``model`` (bits or finetune form) to the packed file ``path``; returns the header.

    The header's ``model`` is the network's ``arch_spec`` (what rebuilds it) with the source
    ``checkpoint``, its accuracy ``acc``, and the ``input_shape`` its ``macs`` and ``bops`` (one
    image's multiply-accumulates and bit-operations, ``model.costs()``) are counted for.
    """
    if model.form == "float":
        raise ValueError("a float model has no quantization scheme to pack")
    costs = model.costs()
    description = {**model.arch_spec, "checkpoint": checkpoint, "acc": acc,
                   "input_shape": list(model.input_shape),
                   "macs": sum(row["macs"] for row in costs),
                   "bops": sum(row["bops"] for row in costs)}
    return write_packed(path, description, *packed_tensors(model))


def unpack(path):
    """Rebuild the model of a packed file, in bits form on the CPU; returns ``(model, header)``."""
    header, quantized, floats = read_packed(path)
    try:
        spec = {k: v for k, v in header["model"].items() if k not in DESCRIBED}
        model = build_model(**spec)
        if header["model"].get("input_shape"):
            model.input_shape = tuple(header["model"]["input_shape"])
        scheme = {name: [quantized[f"{name}.weight"][1],
                         quantized[f"{name}.bias"][1] if f"{name}.bias" in quantized else 0]
                  for name, _ in model.quant_layers()}
        model.allocate("bits", scheme)
        state = dict(floats)
        for layer, m in model.quant_layers():
            for slot in m.slots:
                code, nbits, scale = quantized.get(f"{layer}.{slot}") or (
                    torch.zeros(m.shapes[slot], dtype=torch.long), 0, torch.zeros(()))
                p, n = encode(code, max(nbits, 1))  # (..., N) exact 0/1 planes
                state.update({f"{layer}.{name}": t
                              for name, t in zip(NAMES[slot], (p, n, scale))})
        model.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise PackedFileError(f"{path} does not describe a network of this code "
                              f"({str(e).splitlines()[0][:200]})") from None
    return model, header


def unpacked_checkpoint(path, **fields):
    """The checkpoint of a packed file's model, as ``checkpoint_state`` writes one (bits form,
    its scheme, the accuracy its header records, ``fields`` such as ``args`` and ``epoch``).
    A model packed after its planes were re-quantized (a BSQ run's result, a ``best_bin``) comes
    back with every tensor equal to its checkpoint's, so scripts read either file alike."""
    model, header = unpack(path)
    return checkpoint_state(model, acc=header["model"].get("acc"), **fields)


def _used(layer, slot):
    """The tensor ``layer``'s forward pass uses for ``slot``, zeros where it uses none."""
    if not layer.uses(slot):
        return torch.zeros(layer.shapes[slot])
    return layer.quantized(slot).detach().cpu()


def same_weights(a, b):
    """Whether two models compute with the same weights and float tensors, bit for bit (a
    tensor left out of the forward pass counts as zero)."""
    pairs = zip(a.quant_layers(), b.quant_layers())
    same = all(torch.equal(_used(ma, s), _used(mb, s))
               for (_, ma), (_, mb) in pairs for s in ma.slots)
    floats_a, floats_b = float_tensors(a), float_tensors(b)
    return same and floats_a.keys() == floats_b.keys() and all(
        torch.equal(v.cpu(), floats_b[k].cpu()) for k, v in floats_a.items())


def sizes(header, file_bytes):
    """The size accounting of a packed file, in bytes unless named otherwise.

    ``paper``: TB / 8, the paper's size (quantized weights at N bits; no signs, scales or float
    tensors). ``quantized``: scales + signs + magnitudes as stored. ``float``: the unquantized
    tensors as stored. ``header``: the 16-byte prefix plus the JSON header. ``file``: all of it.
    ``fp32``: the raw tensor bytes of the same model unquantized (every quantized weight as 4
    bytes, the float tensors as stored), no container overhead.
    """
    quant = header["quantized"]
    tb = sum(torch.Size(e["shape"]).numel() * e["bits"] for e in quant)
    tp = sum(torch.Size(e["shape"]).numel() for e in quant)
    quantized = sum(e["bytes"] for e in quant)
    floats = sum(e["bytes"] for e in header["float"])
    return {"TP": tp, "TB": tb, "paper": tb / 8, "quantized": quantized, "float": floats,
            "header": file_bytes - quantized - floats, "file": file_bytes,
            "fp32": FLOAT_BYTES * tp + floats}
