"""A model's state in a checkpoint: the network it records, and loading the state into a
network in whatever form it was saved (ours or the release's files)."""
import fnmatch

from utils.names import option
from utils.quant.corrections import CORRECTED, RELEASE
from utils.store.checkpoint import (
    PACT_ALPHA,
    CheckpointError,
    load_checkpoint,
    read_scheme,
    state_form,
    strip_prefix,
)

from .build import build_model, check_network
from .resolve import get_arch

RECORDED = ("arch", "num_classes", "act")  # besides the architecture's own flags


def load_model(path=None, checkpoint=None, partial=False, inputs=(), **config):
    """``build_model(**config)`` with the checkpoint at ``path`` (any form, ours or the
    release's) loaded into it; ``checkpoint``: that file already read; ``partial``: see
    ``load_model_state``; ``inputs``: the data's image shapes ``(C, H, W)``, which the network
    is checked on first (``check_network``), the last (the test images') the one its
    bit-operations are counted for. Without ``config``, the network the checkpoint records
    (``recorded_config``). Without a path, the freshly initialised model. Returns
    ``(model, checkpoint)``; raises ``CheckpointError`` (``ArchError`` from the check)."""
    if path and checkpoint is None:
        checkpoint = load_checkpoint(path)
    model = build_model(**(config or recorded_config(checkpoint, path)))
    check_network(model, inputs)
    if inputs:
        model.input_shape = tuple(inputs[-1])  # the test images' (``image_shapes``)
    act = model.arch_spec["act"]
    sites = model.activation_report()
    if inputs and act and not any(row["bits"] for row in sites):
        kinds = ", ".join(dict.fromkeys(row["kind"] for row in sites)) or "none found"
        print(f"--act {act} quantizes no activation of -a {model.arch_spec['arch']}: BSQ quantizes "
              f"ReLU and ReLU6 call sites, and this network's activations are {kinds}")
    if not path:
        return model, None
    return load_model_state(model, checkpoint, path, partial), checkpoint


def recorded_config(ckpt, path=""):
    """``build_model``'s arguments for the network a checkpoint records in its ``arch`` field
    (every checkpoint of ours has one; the release's files do not), computing as its run did
    (``--corrected``, from its ``args``)."""
    record = dict((ckpt or {}).get("arch") or {})
    if "arch" not in record:
        raise CheckpointError(f"checkpoint {path} records no architecture (a release file?): "
                              "give -a and its flags")
    record.pop("form", None)
    corrected = bool(((ckpt or {}).get("args") or {}).get("corrected"))
    return {**record, "corrections": CORRECTED if corrected else RELEASE}


def load_model_state(model, ckpt, path="", partial=False):
    """Load a checkpoint (ours or the release's) into ``model``, in the checkpoint's form.

    The model's quantized layers are first given the checkpoint's form and scheme
    (``Nbit_dict`` before the state dict, as the release does). ``scale``/``biasscale`` load
    whether 0-dim (the release's files, and ours) or of shape (1,). ``partial``: PACT's alphas
    that the file lacks keep their initial value, as the release's convert.py merges states, so
    that a ReLU6 model becomes a PACT one (``--act 1..3``). Raises ``CheckpointError`` naming
    what does not fit: the architecture or one of its flags, the class count, the activation
    mode (and, for a bit model loaded whole, the ``--act`` its file records), or the first tensor
    whose name or shape differs.
    """
    state = without_foreign_keys(strip_prefix(ckpt["state_dict"]), model.arch_spec["arch"])
    check_architecture(model, ckpt, state, path)
    pact, model_pact = (any(k.endswith("." + PACT_ALPHA) for k in s)
                        for s in (state, model.state_dict()))
    if pact != model_pact and not (partial and model_pact):
        wanted = (ckpt.get("arch") or {}).get("act", "1..3" if pact else "4..8 (default 4)")
        raise CheckpointError(f"checkpoint {path} was trained with {'PACT' if pact else 'ReLU6'} "
                              f"activations, this run uses --act {model.arch_spec['act']}: pass "
                              f"--act {wanted}")
    form = state_form(state)
    recorded_act = (ckpt.get("arch") or {}).get("act")
    if form != "float" and not partial and recorded_act not in (None, model.arch_spec["act"]):
        raise CheckpointError(f"checkpoint {path} was trained with --act {recorded_act}, this run "
                              f"uses --act {model.arch_spec['act']}: pass --act {recorded_act}")
    scheme = read_scheme(ckpt)
    if form == "finetune" and scheme is None:
        raise CheckpointError(f"checkpoint {path} is a finetune model without Nbit_dict")
    try:
        model.allocate(form, scheme)
    except KeyError as e:
        reason = " ".join(str(e).split()).strip("'")
        raise CheckpointError(f"checkpoint {path} does not fit this model: its Nbit_dict "
                              f"{reason}") from None
    if partial:
        alphas = {k: v for k, v in model.state_dict().items() if k.endswith("." + PACT_ALPHA)}
        state = {**alphas, **state}
    problem = _mismatch(model.state_dict(), state)
    if problem:
        fix = ("a checkpoint of this architecture whose Nbit_dict matches its planes"
               if form == "bits" else "a checkpoint of this architecture, or pass -a and the "
               "flags of the network it holds")
        raise CheckpointError(f"checkpoint {path} does not fit this model ({problem}): give "
                              f"{fix}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # e.g. a tensor of a type that cannot be copied into the model
        reason = " ".join(str(e).split())[-200:]
        raise CheckpointError(f"checkpoint {path} does not fit this model ({reason})") from None
    return model


def without_foreign_keys(state, arch):
    """``state`` less the entries the architecture's authors' files hold and its network leaves
    out (``Arch.foreign_keys``: Inception-V3's auxiliary classifier in torchvision's file)."""
    patterns = get_arch(arch).foreign_keys
    return {k: v for k, v in state.items()
            if not any(fnmatch.fnmatchcase(k, p) for p in patterns)}


def check_architecture(model, ckpt, state, path=""):
    """The checkpoint's network is ``model``'s: the architecture, its flags and the class count
    it records (or, for the release's files, what its state dict shows), each mismatch named
    with the flag that fixes it."""
    spec = model.arch_spec
    entry = get_arch(spec["arch"])
    record = dict(ckpt.get("arch") or {})
    if not record and entry.describe is not None:
        record = {k: v for k, v in entry.describe(state).items() if v is not None}
    if record.get("arch", spec["arch"]) != spec["arch"]:
        raise CheckpointError(f"checkpoint {path} holds -a {record['arch']}, this run builds -a "
                              f"{spec['arch']}: pass -a {record['arch']} and its flags")
    changed = [k for k in entry.flag_names if k in record and record[k] != spec[k]]
    if changed:
        given = " ".join(f"{option(k)} {record[k]}" for k in changed)
        raise CheckpointError(f"checkpoint {path} is a {entry.title_of(record)}, this run "
                              f"builds {entry.title_of(spec)}: pass {given}")
    if record.get("num_classes", spec["num_classes"]) != spec["num_classes"]:
        raise CheckpointError(f"checkpoint {path} has {record['num_classes']} classes, this run's "
                              f"dataset has {spec['num_classes']}: pass the matching -d/--dataset")


def _mismatch(expected, state):
    """The first difference between the model's state dict and a file's, as one phrase, or None.

    A (1,) tensor in the file fits a 0-dim one in the model (``load_state_dict`` takes its one
    element): older files of ours store the scales that way.
    """
    for key, tensor in expected.items():
        if key not in state:
            return f"{key}: missing from the file"
        got = state[key]
        if got.shape != tensor.shape and not (tensor.dim() == 0 and tuple(got.shape) == (1,)):
            return f"{key}: file {tuple(got.shape)} vs model {tuple(tensor.shape)}"
    extra = next((key for key in state if key not in expected), None)
    return None if extra is None else f"{extra}: in the file, not in this model"
