"""A network's own flags, declared once in its registry entry, reach every script's parser, the
checkpoint's record and every stage of a sweep; declarations of one flag by two networks agree."""
import pytest
import torch.nn as nn

import cifar_prune_STE
import sweep
from models import ARCHS, Arch, ArchError, build_model, model_config, network_flags, register
from utils.cli.flags import Flag


class Stack(nn.Module):
    def __init__(self, blocks, num_classes):
        super().__init__()
        layers = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()]
        for _ in range(blocks - 1):
            layers += [nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))  # (B, num_classes)


def check(flags):
    if flags["blocks"] > 6:
        raise ValueError(f"--blocks {flags['blocks']} is above 6: give at most 6")


@pytest.fixture
def stack():
    """A network registered for the test only, with a flag no other network has."""
    entry = register(Arch("stack", lambda num_classes, blocks: Stack(blocks, num_classes),
                          flags=(Flag("blocks", int, 2, "conv blocks", lo=1),), check=check,
                          title=lambda f: f"Stack-{f['blocks']}"))
    yield entry
    del ARCHS[entry.name]


def test_a_new_networks_flag_reaches_the_parser_the_record_and_the_sweep(stack, tmp_path):
    parse = cifar_prune_STE.get_args_parser().parse_args
    args = parse(["-a", "stack", "--blocks", "3"])
    config = model_config(args)
    assert config["blocks"] == 3 and "depth" not in config
    model = build_model(**config)
    assert len([m for m in model.modules() if isinstance(m, nn.Conv2d)]) == 3
    assert model.arch_spec["blocks"] == 3  # what the checkpoint's arch record holds

    assert model_config(parse(["-a", "stack"]))["blocks"] == 2  # its own default
    with pytest.raises(SystemExit):
        parse(["-a", "stack", "--blocks", "0"])  # its bounds, at parsing
    with pytest.raises(ArchError, match="--blocks 7"):
        model_config(parse(["-a", "stack", "--blocks", "7"]))  # its rule, before any work

    args = sweep.get_args_parser().parse_args(["-a", "stack", "--blocks", "3", "--decays", "0.1",
                                               "--uniform", "4", "--manualSeed", "1"])
    stages, _ = sweep.plan(args, str(tmp_path))
    for stage in stages:
        assert stage.flags[stage.flags.index("--blocks") + 1] == "3", stage.name


def test_other_networks_ignore_it_and_keep_their_records(stack):
    config = model_config(cifar_prune_STE.get_args_parser().parse_args(["--blocks", "3"]))
    assert config["arch"] == "resnet" and "blocks" not in config and config["depth"] == 20


def test_one_flag_declared_by_two_networks_is_one_option_with_each_networks_default(stack):
    depth = next(f for f in network_flags() if f.dest == "depth")
    assert depth.default is None  # the networks' defaults differ: each takes its own
    assert "resnet: 6n+2 (default 20)" in depth.help and "wrn: 6n+4 (default 28)" in depth.help
    widen = next(f for f in network_flags() if f.dest == "widen_factor")
    assert widen.default == 4 and "resnext, wrn" in widen.help
    with pytest.raises(ValueError, match="unlike stack"):
        register(Arch("stack2", Stack, flags=(Flag("blocks", float, 2.0),)))
    assert "stack2" not in ARCHS
