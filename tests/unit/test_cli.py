"""The command lines: each script lists only flags it uses, every value is checked as it is
parsed, and the original README's command lines parse as they are."""
import argparse
import importlib
import re

import pytest

from models import ArchError, model_config
from utils.cli.flags import number
from utils.recipe import RECIPE
from utils.report.console import Progress, duration

SCRIPTS = ["cifar_train", "cifar_prune_STE", "cifar_finetune", "convert", "export", "plots",
           "sweep"]
TRAINING = {"--epochs", "--start-epoch", "--lr", "--schedule", "--gamma", "--momentum", "--wd",
            "--resume", "--train-batch", "--manualSeed", "--deterministic", "--amp",
            "--channels-last", "--compile", "--cuda-graphs", "--progress", "--no-tensorboard"}
BSQ = {"--decay", "--L1", "--Prun_Int", "--thre"}
NOT_LISTED = {  # flags that would do nothing in the script (but those of the unused group)
    "cifar_train": BSQ | {"--Nbits", "--bin", "--dict", "--export", "--load"},
    "cifar_prune_STE": {"--dict", "--export", "--load"},
    "cifar_finetune": BSQ | {"--dict", "--export", "--load"},
    "convert": TRAINING | BSQ | {"--bin", "--evaluate", "--export", "--load"},
    "export": TRAINING | BSQ | {"--Nbits", "--bin", "--dict", "--checkpoint"},
    "plots": TRAINING | BSQ | {"--Nbits", "--depth", "--model", "--checkpoint"},
    "sweep": {"--epochs", "--lr", "--schedule", "--resume", "--model", "--bin", "--L1",
              "--decay", "--Prun_Int", "--checkpoint", "--evaluate"},
}
RELEASE_COMMANDS = {  # the original README's command lines, verbatim
    "cifar_prune_STE": "-a resnet --depth 20 --epochs 350 --lr 0.1 --schedule 250 --gamma 0.1 "
                       "--wd 1e-4 --model checkpoints/cifar10/resnet-20-8/model_best.pth.tar "
                       "--decay 0.01 --Prun_Int 100 --thre 0.0 --checkpoint "
                       "checkpoints/cifar10/xxx --Nbits 8 --act 4 --bin --L1",
    "cifar_finetune": "-a resnet --depth 20 --epochs 300 --lr 0.01 --schedule 150 250 --gamma 0.1 "
                      "--wd 1e-4 --model checkpoints/cifar10/xxx/checkpoint.pth.tar --checkpoint "
                      "checkpoints/cifar10/xxx-ft --Nbits 8 --act 4 --bin",
    "convert": "-a resnet --depth 20 --model checkpoints/cifar10/resnet-20/model_best.pth.tar "
               "--dict checkpoints/cifar10/xxx/checkpoint.pth.tar --checkpoint "
               "checkpoints/cifar10/xxx-mp --Nbits 8 --act 4",
}


UNUSED = "accepted for the release's command lines; unused, as in the release"
COMMON = {"-d": "cifar10", "-j": 4, "--start-epoch": 0, "--train-batch": 128, "--test-batch": 100,
          "--Nbits": 4, "--act": 4, "--lr": 0.1, "--drop": 0, "--schedule": [150, 225],
          "--gamma": 0.1, "--momentum": 0.9, "--wd": 5e-4, "-c": "checkpoint", "--resume": "",
          "--model": None, "-a": "resnet20", "--depth": 29, "--block-name": "BasicBlock",
          "--cardinality": 8, "--widen-factor": 4, "--growthRate": 12, "--compressionRate": 2,
          "--manualSeed": 1234, "-e": False, "--gpu-id": "0"}
RELEASE_PARSERS = {  # every flag of the release's three parsers, with the release's default
    "cifar_prune_STE": {**COMMON, "--epochs": 350, "--bin": False, "--Prun_Int": 50, "--thre": 0.0,
                        "--decay": 0.01, "--L1": False},
    "cifar_finetune": {**COMMON, "--epochs": 300, "--bin": False},
    "convert": {**COMMON, "--epochs": 300, "--decay": 0.01, "--dict": None},
}
OURS = {  # where the release's default cannot run here, or changes no number (README)
    "-a": "resnet",  # resnet20 is not among the release's own choices
    "--depth": None,  # each network's own (resnet: 20); the release's 29 fits few of them
    "--model": "", "--dict": "",  # none, spelt "" (a flag given as "" is none too)
    "--gpu-id": None,  # CUDA_VISIBLE_DEVICES is left as it is unless given
    "--manualSeed": None,  # 1234 unless --resume keeps the run's (utils/cli/setup.py)
    "--decay": None,  # BSQ: the release's 0.01 unless a --target-* sets alpha (cifar_prune_STE.py)
}
SAMPLES = {"-d": "cifar100", "-a": "resnet", "--depth": "20", "--block-name": "basicblock",
           "--schedule": ["10", "20"], "-c": "out", "--resume": "r.pth.tar", "--model": "m.pth.tar",
           "--dict": "d.pth.tar", "--gpu-id": "1", "--act": "2", "--Nbits": "8"}


def options(parser):
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def used_options(parser):
    unused = next((g for g in parser._action_groups if g.title == UNUSED), None)
    listed = {id(a) for a in unused._group_actions} if unused else set()
    return {s for a in parser._actions if id(a) not in listed for s in a.option_strings
            if s.startswith("--")}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_lists_only_flags_the_script_uses_each_explained_once(script):
    parser = importlib.import_module(script).get_args_parser()
    assert not used_options(parser) & NOT_LISTED[script]
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest
    text = parser.format_help()
    assert "(default: None)" not in text
    assert all(entry.count("(default:") <= 1 for entry in re.split(r"\n  -", text))


@pytest.mark.parametrize("script", sorted(RELEASE_COMMANDS))
def test_the_release_command_lines_parse_as_they_are(script):
    args = importlib.import_module(script).get_args_parser().parse_args(
        RELEASE_COMMANDS[script].split())
    assert args.depth == 20 and args.act == 4 and args.Nbits == 8


@pytest.mark.parametrize("script", sorted(RELEASE_PARSERS))
def test_every_flag_of_the_releases_parser_parses_with_its_default(script):
    parser = importlib.import_module(script).get_args_parser()
    defaults = parser.parse_args([])
    for flag, default in RELEASE_PARSERS[script].items():
        action = parser._option_string_actions[flag]
        unused = action.dest.startswith("unused_")
        assert getattr(defaults, action.dest) == (default if unused else OURS.get(flag, default))
        sample = SAMPLES.get(flag, [] if action.nargs == 0 else [str(default)])
        given = parser.parse_args([flag, *([sample] if isinstance(sample, str) else sample)])
        assert getattr(given, action.dest) not in (None, "") or action.nargs == 0, flag
    if script == "convert":  # its training flags change nothing, as in the release
        unused = next(g for g in parser._action_groups if g.title == UNUSED)
        assert TRAINING & {"--epochs", "--lr", "--resume", "--manualSeed"} <= {
            s for a in unused._group_actions for s in a.option_strings}


def test_a_bad_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        importlib.import_module("cifar_prune_STE").get_args_parser().parse_args(
            ["--Prun_Int", "-1"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "-1 is not >= 0" in err and err.count("\n") == 1


@pytest.mark.parametrize("flags, message", [
    ("--block-name Bottleneck", "no bit representation of Bottleneck blocks"),
    ("--depth 21", "--depth 21 is not 6n+2, which -a resnet needs (8, 14, 20"),
    ("--depth 2", "--depth 2 is not 6n+2"),
    ("-a wrn --depth 20", "--depth 20 is not 6n+4, which -a wrn needs"),
    ("-a preresnet --depth 21 --block-name Bottleneck", "--depth 21 is not 9n+2"),
    ("-a preresnet --block-name Basic", "--block-name Basic is not a block"),
    ("-a vgg19bn", "-a vgg19bn is not an architecture: did you mean vgg19_bn?"),
    ("-a nowhere.py:net", "nowhere.py does not exist")])
def test_the_model_flags_are_checked_against_the_architecture(flags, message):
    args = importlib.import_module("cifar_prune_STE").get_args_parser().parse_args(flags.split())
    with pytest.raises(ArchError, match=re.escape(message)):
        model_config(args)


@pytest.mark.parametrize("arch, depth", [("resnet", 20), ("preresnet", 110), ("resnext", 29),
                                         ("wrn", 28), ("densenet", 100), ("vgg16_bn", None)])
def test_a_depth_left_out_is_the_architectures_own(arch, depth):
    args = importlib.import_module("cifar_prune_STE").get_args_parser().parse_args(["-a", arch])
    config = model_config(args)
    assert config.get("depth") == depth and args.depth == depth if depth else "depth" not in config


def test_values_are_checked_as_they_are_parsed():
    assert number(int, 1, 8)("8") == 8 and number(float, 0)("0") == 0.0
    for parse, text, message in [(number(int, 1, 8), "9", "9 is not in 1..8"),
                                 (number(float, 0), "-1", "-1 is not >= 0"),
                                 (number(float, 0, lo_open=True), "0", "0 is not > 0"),
                                 (number(float, 0, 1, hi_open=True), "1", "1 is not >= 0 and < 1"),
                                 (number(float, 0), "nan", "nan is not >= 0"),
                                 (number(int, 0), "x", "'x' is not an integer")]:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
            parse(text)


def test_progress_estimates_the_time_left_from_the_pace_so_far(monkeypatch):
    clock = iter([0.0, 0.0, 30.0, 30.0])
    monkeypatch.setattr("utils.report.console.time.monotonic", lambda: next(clock))
    progress = Progress(epochs=10, first_epoch=4, every=0, stream=open("/dev/null", "w"))
    progress.begin(epoch=4, steps=100)  # 6 epochs to go, the first one starting at t = 0
    assert progress.eta(step=50) == pytest.approx(30.0 / 0.5 * 5.5)  # half an epoch in 30 s
    assert duration(3725) == "1h02m" and duration(245) == "4m05s" and duration(12.4) == "12s"


def test_the_sweep_passes_every_flag_whose_release_default_is_not_the_recipe(tmp_path):
    """A stage's flags, not the scripts' (the release's) defaults, make the recipe; --corrected
    reaches every stage that has it."""
    import sweep

    args = sweep.get_args_parser().parse_args(["--decays", "0.1", "--corrected", "--manualSeed",
                                               "5"])
    stages, _ = sweep.plan(args, str(tmp_path))
    for stage in stages:
        flags = stage.flags
        assert ("--corrected" in flags) == (stage.script != "cifar_train.py"), stage.name
        if stage.script in ("cifar_prune_STE.py", "cifar_finetune.py"):
            for flag in ("--epochs", "--lr", "--schedule", "--wd", "--manualSeed", "--Nbits"):
                assert flag in flags, (stage.name, flag)
            assert flags[flags.index("--Nbits") + 1] == "8"
        if stage.script == "cifar_prune_STE.py":
            assert flags[flags.index("--Prun_Int") + 1] == str(RECIPE["bsq"].prun_int)
        if stage.script == "convert.py":
            assert flags[flags.index("--Nbits") + 1] == "8"
