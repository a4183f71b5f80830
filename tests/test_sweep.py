"""The sweep: the whole recipe per alpha on a tiny run, its table, and reuse of finished stages.

The full sweep runs its stages in this process (the same scripts, flags and output files as the
subprocesses, without their import time); the failing stage runs as a real subprocess.
"""
import contextlib
import importlib
import json
import os
import subprocess

import pytest
import torch

import sweep
from cifar_fixture import make_cifar
from utils.errors import BSQError, run_main

ALPHA = 20.0  # strong enough to empty planes in one epoch of the tiny dataset
RUN = f"alpha-{ALPHA:g}"


def sweep_args(out, data_root, *extra):
    return ["--decays", str(ALPHA), "--depth", "8", "--epochs-scale", "0.001", "--train-batch",
            "10", "--data-root", data_root, "--out", str(out), *extra]


def run_in_process(command, cwd, stdout, stderr):
    """``subprocess.run`` stand-in: the stage script's ``run_main`` in this process."""
    script = importlib.import_module(os.path.splitext(os.path.basename(command[1]))[0])
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            run_main(script.main, script.get_args_parser(), command[2:])
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(command, code)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep on a 50-image CIFAR-10: pretraining, 8 bits, and one alpha's four stages,
    1 epoch each."""
    out, data_root = tmp_path_factory.mktemp("sweep"), tmp_path_factory.mktemp("tiny_data")
    make_cifar(data_root, "cifar10", n_train=50, n_test=20)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: threads only add contention on a shared CPU
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sweep.subprocess, "run", run_in_process)
            figures = sweep.main(sweep.get_args_parser().parse_args(sweep_args(out,
                                                                               str(data_root))))
    finally:
        torch.set_num_threads(threads)
    return out, figures, str(data_root)


def stage_line(folder):
    """The last stdout line of a stage: its own final JSON object."""
    with open(os.path.join(folder, "stdout.txt")) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def test_epochs_and_milestones_scale_with_at_least_one():
    assert sweep.scaled(350, 1.0) == 350 and sweep.scaled(350, 0.001) == 1
    assert sweep.scaled(250, 0.01) == 3 and sweep.scaled(100, 0.01) == 1
    flags = sweep.schedule_flags("bsq", 0.1)
    assert flags[flags.index("--epochs") + 1] == "35"
    assert flags[flags.index("--Prun_Int") + 1] == "10"
    assert flags[flags.index("--schedule") + 1] == "25"


def test_speed_flags_reach_every_stage():
    parse = sweep.get_args_parser().parse_args
    assert not set(sweep.SPEED_FLAGS) & set(sweep.common_flags(parse(["--decays", "0.1"])))
    flags = sweep.common_flags(parse(["--decays", "0.1", "--cuda-graphs", "--channels-last"]))
    assert "--cuda-graphs" in flags and "--channels-last" in flags and "--amp" not in flags


def test_table_rows_are_the_stages_final_lines(swept):
    out, figures, _ = swept
    run = out / RUN
    bsq, ft = stage_line(run / "bsq"), stage_line(run / "finetune")
    scratch, scratch_ft = stage_line(run / "scratch"), stage_line(run / "scratch-ft")
    assert figures["rows"] == [{"alpha": ALPHA, "avg_bits": bsq["avg_bits"], "comp": bsq["comp"],
                                "bsq_acc": bsq["acc"], "finetune_acc": ft["acc"],
                                "scratch_acc": scratch_ft["acc"],
                                "scratch_before_acc": scratch["acc"]}]
    assert ft["scheme"] == scratch["scheme"] == scratch_ft["scheme"] == bsq["scheme"]
    assert bsq["comp"] > 4.0
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["rows"] == figures["rows"] and saved["epochs"]["bsq"] == 1
    table = (out / "sweep.md").read_text()
    assert (f"| {ALPHA:g} | {bsq['avg_bits']:.3f} | {bsq['comp']:.2f}x | {bsq['acc']:.2f} | "
            f"{ft['acc']:.2f} | {scratch_ft['acc']:.2f} |") in table


def test_each_stage_ran_one_epoch_and_bsq_wrote_its_scheme(swept):
    out, _, _ = swept
    for stage in ("float", f"{RUN}/bsq", f"{RUN}/finetune", f"{RUN}/scratch-ft"):
        assert len((out / stage / "log.txt").read_text().strip().splitlines()) == 2, stage
    for stage in (f"{RUN}/bsq", f"{RUN}/finetune"):
        report = json.loads((out / stage / "scheme.json").read_text())
        line = stage_line(out / stage)
        assert report["scheme"] == line["scheme"] and report["totals"]["acc"] == line["acc"]
        assert round(report["totals"]["compression"], 4) == line["comp"]
        assert report["totals"]["TB"] / report["totals"]["TP"] == report["totals"]["avg_bits"]


def test_rerun_reuses_finished_stages(swept):
    out, figures, data_root = swept
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("**/stdout.txt")}
    again = sweep.main(sweep.get_args_parser().parse_args(sweep_args(out, data_root)))
    assert again["rows"] == figures["rows"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("**/stdout.txt")} == stamps


def test_bad_input_is_a_one_line_error(tmp_path, swept):
    parser, data_root = sweep.get_args_parser(), swept[2]
    with pytest.raises(BSQError, match="epochs-scale"):
        sweep.main(parser.parse_args(sweep_args(tmp_path, data_root, "--epochs-scale", "0")))
    with pytest.raises(BSQError, match="float-model"):
        sweep.main(parser.parse_args(sweep_args(tmp_path, data_root, "--float-model", "none")))
    with pytest.raises(sweep.StageFailed, match="pretraining.*depth 9"):
        sweep.main(parser.parse_args(sweep_args(tmp_path, data_root, "--depth", "9")))


def test_sweep_draws_the_tradeoff(swept):
    out, figures, _ = swept
    pytest.importorskip("matplotlib")
    assert figures["plot"] == str(out / "tradeoff.png")
    assert (out / "tradeoff.png").read_bytes().startswith(b"\x89PNG")
    assert "![accuracy vs compression](tradeoff.png)" in (out / "sweep.md").read_text()
