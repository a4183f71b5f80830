"""The registry of architectures: each entry owning how its network is built, checked, titled
and read off a state dict. A leaf: names are resolved above it (``models/resolve.py``).

An entry's ``build(num_classes, **flags)`` returns the *float* network, exactly as its authors
define it; ``models.build_model`` then turns it into a bit network with the one swap of
``models/swap.py``. So an entry holds no BSQ code, and everything BSQ does works on every entry
the same way. The CIFAR networks of the release (``models/cifar``) register themselves here;
``-a path/to/file.py:factory`` or ``-a package.module:factory`` is a researcher's own network
(``models/custom.py``); ``-a torchvision.NAME`` is torchvision's classification network ``NAME``
(``models/torchvision.py``); ``models/resolve.py`` turns an ``-a`` text into its entry.

Each entry declares the flags its network reads (``Arch.flags``, each a ``Flag``: kind, bounds,
its default, what it means there); the command line offers the flags of every registered network
(``network_flags``), and each network reads its own and ignores the others, as the release's
scripts do. Two networks may declare the same flag (``--depth``) with their own defaults and help,
but must parse it alike.
"""
from dataclasses import dataclass, replace
from typing import Callable, Optional

from utils.errors import BSQError


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

    ``build(num_classes, **flags)``: the float network, given the values of the ``flags`` it
    reads (each a ``Flag``, whose default is this network's). ``check(flags)``: raise
    ``ValueError`` naming what is wrong with the flags and the fix. ``title(flags)``: a human
    name, e.g. ``ResNet-20``. ``float_layers``: name patterns of convs and linears that stay
    float. ``describe(state)``: what a state dict without an ``arch``
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

    @property
    def flag_names(self):
        """The ``dest`` of each flag it reads: ``("depth", "widen_factor", "drop")``."""
        return tuple(flag.dest for flag in self.flags)

    def config(self, flags):
        """The values of the flags this network reads, from ``flags`` (model flags by ``dest``;
        left out or None: this network's default); checked (``ArchError``)."""
        values = {k: v for k, v in flags.items() if v is not None}
        values.update({f.dest: f.default for f in self.flags if values.get(f.dest) is None})
        if self.check is not None:
            try:
                self.check(values)
            except ValueError as e:
                raise ArchError(str(e)) from None
        return {k: values[k] for k in self.flag_names}

    def title_of(self, config):
        """The network a config builds, for people: ``ResNet-20``, ``vgg16_bn``, ..."""
        return self.title(config) if self.title else self.name


ARCHS = {}


def register(arch):
    """Add ``arch`` to the registry (its name must be new, and each flag it shares with a network
    registered before parses alike); returns it."""
    if arch.name in ARCHS:
        raise ValueError(f"architecture {arch.name!r} is registered twice")
    for flag in arch.flags:
        for other in ARCHS.values():
            known = next((f for f in other.flags if f.dest == flag.dest), None)
            if known is not None and not flag.parses_like(known):
                raise ValueError(f"{arch.name} declares {flag.options[0]} unlike {other.name} "
                                 "(kind, bounds or choices): declare it alike, or name it anew")
    ARCHS[arch.name] = arch
    return arch


def network_flags():
    """One command-line ``Flag`` per flag the registered networks declare, in the order they
    declare them: the help says what it means to each network; the default is the networks'
    common one, else None (each network then takes its own, named in the help)."""
    declared = {}
    for arch in ARCHS.values():
        for flag in arch.flags:
            declared.setdefault(flag.dest, []).append((arch.name, flag))
    merged = []
    for decls in declared.values():
        common = len({flag.default for _, flag in decls}) == 1
        meanings = {}
        for name, flag in decls:
            meanings.setdefault(flag.help + ("" if common else f" (default {flag.default})"),
                                []).append(name)
        first = decls[0][1]
        merged.append(replace(
            first, default=first.default if common else None,
            help="; ".join(f"{', '.join(names)}: {text}" for text, names in meanings.items()),
            names=tuple(dict.fromkeys(n for _, flag in decls for n in flag.options))))
    return merged
