"""The model flags, the release's names: which network (``-a``), its own flags, and ``--act``.

The flags of every registered network are accepted by every script, as in the release; each
network reads the ones it declares (``Arch.flags``). ``model_config`` turns them into
``build_model``'s arguments and checks them against the architecture before any work.
"""
from utils.cli.flags import Flag
from utils.data import CROP, IMAGENET, Crops, DataError, image_shapes, num_classes
from utils.names import option
from utils.quant.corrections import Corrections

from .registry import ARCHS, ArchError, network_flags
from .resolve import get_arch

ACT = Flag("act", int, 4, "activation precision: 0 none, 1-3 PACT, 4-8 ReLU6, each quantized per "
           "batch", lo=0, hi=8)


def model_flags():
    """``-a``, every registered network's flags (``network_flags``) and ``--act``: the model
    group of every script's parser (``Parser.add_flags``)."""
    arch = Flag("arch", str, "resnet", names=("-a", "--arch"), help=(
        f"architecture: {', '.join(ARCHS)}; torchvision's classification networks as "
        "torchvision.NAME (e.g. torchvision.resnet50); or your own network as "
        "path/to/file.py:factory or package.module:factory (called as factory(num_classes=N)); "
        "resnet is the release's quantized CIFAR ResNet (its parser's default, resnet20, is not "
        "among its choices)"))
    return [arch, *network_flags(), ACT]


CROP_FLAGS = ("train_crop_size", "val_resize_size", "val_crop_size")


def model_config(args):
    """``build_model``'s arguments as the flags describe them, checked against the architecture
    and the data (``ArchError`` naming the fix). A flag left out takes the architecture's
    default, written back into ``args`` so that the run records what it built; so do ImageNet's
    crop sizes (``input_defaults``)."""
    entry = get_arch(args.arch)
    flags = entry.config({f.dest: getattr(args, f.dest, None) for f in network_flags()})
    for dest, value in flags.items():
        setattr(args, dest, value)
    classes = num_classes(args.dataset, getattr(args, "data_root", "./data"))
    input_defaults(args, args.arch)
    for shape in image_shapes(args) if entry.check_input is not None else ():
        try:
            entry.check_input(classes, shape)
        except ValueError as e:
            raise ArchError(str(e)) from None
    return {"arch": args.arch, "num_classes": classes, "act": args.act,
            "corrections": Corrections.from_args(args), **flags}


def input_defaults(args, arch):
    """ImageNet's crop sizes left out (None) become those of the network ``arch`` is made for
    (``Arch.input_size``: 224 / 256 / 224, Inception-V3's 299 / 342 / 299; a network without
    one: 224), written into ``args``; on CIFAR they are refused (``DataError``)."""
    given = [dest for dest in CROP_FLAGS if getattr(args, dest, None) is not None]
    if args.dataset != IMAGENET:
        if given:
            raise DataError(f"{option(given[0])} is for -d imagenet: CIFAR's images are 32x32 "
                            "as they are; drop it")
        return
    size = (get_arch(arch).input_size or (3, CROP))[-1]
    crops = Crops.from_args(args, size)
    for dest, value in zip(CROP_FLAGS, (crops.train, crops.val_resize, crops.val)):
        setattr(args, dest, value)


def arch_title(args):
    """The network the flags build, for people: ``ResNet-20``, ``vgg16_bn``, ..."""
    entry = get_arch(args.arch)
    return entry.title_of({k: getattr(args, k, None) for k in entry.flag_names})
