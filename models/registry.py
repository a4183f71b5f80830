"""The registry of architectures: each entry owning how its network is built, checked, titled
and read off a state dict. A leaf: names are resolved above it (``models/resolve.py``).

An entry's ``build(num_classes, **flags)`` returns the *float* network, exactly as its authors
define it; ``models.build_model`` then turns it into a bit network with the one swap of
``models/swap.py``. So an entry holds no BSQ code, and everything BSQ does works on every entry
the same way. The CIFAR networks of the release (``models/cifar``) register themselves here;
``-a path/to/file.py:factory`` or ``-a package.module:factory`` is a researcher's own network
(``models/custom.py``); ``-a torchvision.NAME`` is torchvision's classification network ``NAME``
(``models/torchvision.py``); ``models/resolve.py`` turns an ``-a`` text into its entry.

The model flags (``--depth``, ``--widen-factor``, ``--cardinality``, ``--growthRate``,
``--compressionRate``, ``--drop``, ``--block-name``) are the release's: each entry reads the ones
its network takes (``flags``) and ignores the others, as the release's scripts do.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

from utils.errors import BSQError

# The architecture flags (argparse dests) and the release's defaults of those with one; --depth's
# (29) fits few networks, so each network has its own (Arch.defaults).
FLAG_DEFAULTS = {"block_name": "BasicBlock", "cardinality": 8, "widen_factor": 4, "growthRate": 12,
                 "compressionRate": 2, "drop": 0.0}
MODEL_FLAGS = ("depth", *FLAG_DEFAULTS)


class ArchError(BSQError):
    """An architecture, or a flag of one, that cannot be built; the message names the fix."""


@dataclass(frozen=True)
class ReleasePolicy:
    """What the release computes on its own network (``-a resnet``) where the method does not.

    ``models.build_model`` applies it unless ``--corrected`` (``Corrections.clamp`` and
    ``fc_bias``); every other network computes the method. ``clamp(name, form)``: whether the
    release's post-step clamp, which chooses parameters by name, hits the parameter ``name`` in
    ``form`` (``"bits"`` or ``"finetune"``); the finetune form leaves the classifier bias out of
    the forward pass; ``act0_clips``: ``--act 0`` keeps PACT clipping without a quantizer
    (elsewhere it leaves the activations as they are).
    """
    clamp: Callable
    act0_clips: bool = True


@dataclass(frozen=True)
class Arch:
    """One architecture.

    ``build(num_classes, **flags)``: the float network, given the ``flags`` it reads.
    ``defaults``: its own defaults for flags the command line leaves out (``--depth``).
    ``check(flags)``: raise ``ValueError`` naming what is wrong with the flags and the fix.
    ``title(flags)``: a human name, e.g. ``ResNet-20``. ``float_layers``: name patterns of convs
    and linears that stay float. ``describe(state)``: what a state dict without an ``arch``
    record shows of the flags (``{"depth": 20, "num_classes": 10}``), for the release's files.
    ``policy``: the release's own network only (``ReleasePolicy``), what the release computes
    on it where the method does not; applied unless ``--corrected``. ``input_size``: the
    ``(C, H, W)`` it is made for (ImageNet's crops default to its H), None: the data's.
    ``foreign_keys``: name patterns of state-dict entries its authors' weight files hold and
    this network leaves out (Inception-V3's auxiliary classifier), dropped on loading.
    ``check_input(num_classes, shape)``: raise ``ValueError`` naming the fix when the network
    cannot take ``(C, H, W) = shape`` inputs.
    """
    name: str
    build: Callable
    flags: tuple = ()
    defaults: dict = field(default_factory=dict)
    check: Optional[Callable] = None
    about: str = ""
    title: Optional[Callable] = None
    float_layers: tuple = ()
    describe: Optional[Callable] = None
    policy: Optional[ReleasePolicy] = None
    input_size: Optional[tuple] = (3, 32, 32)
    foreign_keys: tuple = ()
    check_input: Optional[Callable] = None

    @property
    def release(self):
        """Whether this is the release's own quantized network (``-a resnet``)."""
        return self.policy is not None

    def config(self, flags):
        """The flags this network reads, from ``flags`` (model flags; the release's defaults for
        those left out), with its own defaults where a flag is None; checked (``ArchError``)."""
        values = {**FLAG_DEFAULTS, **{k: v for k, v in flags.items() if v is not None}}
        values.update({k: v for k, v in self.defaults.items() if flags.get(k) is None})
        if self.check is not None:
            try:
                self.check(values)
            except ValueError as e:
                raise ArchError(str(e)) from None
        return {k: values[k] for k in self.flags}

    def title_of(self, config):
        """The network a config builds, for people: ``ResNet-20``, ``vgg16_bn``, ..."""
        return self.title(config) if self.title else self.name


ARCHS = {}


def register(arch):
    """Add ``arch`` to the registry (its name must be new); returns it."""
    if arch.name in ARCHS:
        raise ValueError(f"architecture {arch.name!r} is registered twice")
    ARCHS[arch.name] = arch
    return arch
