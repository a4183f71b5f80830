"""What ``--corrected`` changes: the release's behaviour is the default, each correction opt-in.

The original release computes a few things differently from the method it describes; the paper's
numbers were produced with them, so a run here is the release's unless ``--corrected`` is given.
Each field names one correction (README, "What --corrected changes", with its measured effect);
``Corrections()`` is the release, ``Corrections.from_args(args)`` what the flags ask for. The
object is built once per run and handed to the model (``models.build_model``) and to the steps.
"""
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Corrections:
    """Which of the release's behaviours are corrected; all False is the release."""
    clamp: bool = False  # 1: clamp only bit planes (BSQ, also without --bin) / finetune weights w
    fc_bias: bool = False  # 2: the finetune forward pass keeps the classifier bias
    zero_precision: bool = False  # 3: an all-zero tensor goes to precision 0 and stays zero
    thre_order: bool = False  # 4: --thre > 0 ORs every dropped MSB plane into the lower ones
    load_rounding: bool = False  # 5: a loaded bit model is re-quantized, not only plane-dropped
    best_float: bool = False  # 6: best_float holds scale * Q_N(w), the weights the model uses
    own_acc: bool = False  # 7: best_bin / best_float record their own test accuracy

    @classmethod
    def from_args(cls, args):
        """Every correction when ``--corrected`` is given, none otherwise."""
        on = bool(getattr(args, "corrected", False))
        return cls(**{f.name: on for f in fields(cls)})


RELEASE = Corrections()
CORRECTED = Corrections(**{f.name: True for f in fields(Corrections)})
