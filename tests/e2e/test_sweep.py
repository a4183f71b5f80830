"""The sweep: the whole recipe per alpha on a tiny run, its table, reuse of finished stages, and
several stages at once.

The full sweep runs its stages in this process (the same scripts, flags and output files as the
subprocesses, without their import time); the failing stage and the ``--jobs`` sweep run real
subprocesses.
"""
import contextlib
import importlib
import json
import os

import pytest
import torch
from cifar_fixture import make_cifar
from helpers import run_script

import sweep
from utils.errors import run_main

ALPHA = 20.0  # strong enough to empty planes in one epoch of the tiny dataset
RUN = f"alpha-{ALPHA:g}"


def sweep_args(out, data_root, *extra):
    return ["--decays", str(ALPHA), "--depth", "8", "--epochs-scale", "0.001", "--train-batch",
            "10", "--data-root", data_root, "--out", str(out), *extra]


class Finished:
    """What ``sweep.launch`` returns, for a stage that already ran to its end."""

    def __init__(self, returncode):
        self.returncode = returncode

    def poll(self):
        return self.returncode

    def terminate(self):
        pass

    def wait(self):
        return self.returncode


def run_in_process(command, env, stdout, stderr, launched=None):
    """``sweep.launch`` stand-in: the stage script's ``run_main`` in this process."""
    script = importlib.import_module(os.path.splitext(os.path.basename(command[1]))[0])
    if launched is not None:
        launched.append((os.path.basename(command[1]), env.get("CUDA_VISIBLE_DEVICES")))
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            run_main(script.main, script.get_args_parser(), command[2:])
        except SystemExit as e:
            code = e.code
    return Finished(code)


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
            patch.setattr(sweep, "launch", run_in_process)
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
    flags = sweep.training_flags(parse(["--decays", "0.1", "--manualSeed", "3"]))
    assert not {"--amp", "--channels-last", "--compile", "--cuda-graphs", "--no-cuda-graphs"} \
        & set(flags)
    flags = sweep.training_flags(parse(["--decays", "0.1", "--no-cuda-graphs", "--channels-last",
                                        "--manualSeed", "3"]))
    assert "--no-cuda-graphs" in flags and "--channels-last" in flags and "--amp" not in flags


def test_job_slots_go_round_the_visible_gpus(tmp_path, monkeypatch):
    """With two GPUs visible and --jobs 3, three stages ready together run on GPUs 0, 1 and 0
    again, each given its GPU in CUDA_VISIBLE_DEVICES."""
    assert [sweep.gpu_for(slot, ["0", "1"]) for slot in range(3)] == ["0", "1", "0"]
    assert sweep.gpu_for(5, []) is None
    gpus = []

    def launch(command, env, stdout, stderr):
        gpus.append(env.get("CUDA_VISIBLE_DEVICES"))
        stdout.write('{"acc": 10.0, "comp": 4.0}\n')
        stdout.flush()
        return Finished(0)

    monkeypatch.setattr(sweep, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(sweep, "launch", launch)
    stages = [sweep.Stage(f"s{i}", "convert.py", [], str(tmp_path / f"s{i}")) for i in range(3)]
    results = sweep.run_stages(stages, jobs=3, every=0)
    assert gpus == ["0", "1", "0"] and set(results) == {"s0", "s1", "s2"}


def test_jobs_run_ready_stages_at_once(tmp_path, swept):
    """A real sweep of two alphas with --jobs 2 on the CPU: both BSQ stages start before either
    ends, and the table is complete."""
    out, _, data_root = swept
    float_model = out / "float" / "model_best.pth.tar"
    proc = run_script(tmp_path, "sweep.py", sweep_args(
        tmp_path / "jobs", data_root, "--decays", "20", "40", "--float-model", str(float_model),
        "--jobs", "2", "--manualSeed", "0"))
    events = [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("[sweep]")]
    starts = [i for i, e in enumerate(events) if e.endswith("BSQ")]
    assert len(starts) == 4 and starts[1] == starts[0] + 1  # started, started, ended, ended
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
    assert [r["alpha"] for r in rows] == [20.0, 40.0]


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


def test_a_failing_stage_is_a_one_line_error(tmp_path, swept):
    parser, data_root = sweep.get_args_parser(), swept[2]
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    args = sweep_args(tmp_path / "out", data_root, "--float-model", str(tmp_path / "notes.txt"))
    with pytest.raises(sweep.StageFailed, match="8-bit conversion exited with status 2: error: "
                                                "checkpoint .* is not a readable"):
        sweep.main(parser.parse_args(args))


def test_sweep_draws_the_tradeoff(swept):
    out, figures, _ = swept
    pytest.importorskip("matplotlib")
    assert figures["plot"] == str(out / "tradeoff.png")
    assert (out / "tradeoff.png").read_bytes().startswith(b"\x89PNG")
    assert "![accuracy vs compression](tradeoff.png)" in (out / "sweep.md").read_text()


def test_the_status_line_shows_a_stages_latest_epoch_and_its_log(tmp_path, monkeypatch):
    def launch(command, env, stdout, stderr):
        stdout.write("epoch   1/3  lr 0.1  ...  elapsed 12s  eta 24s\n")
        stderr.write("epoch 2/3 step 50/391  loss 1.2345 acc 55.00%  elapsed 17s  eta 20s\n")
        stdout.flush(), stderr.flush()
        os.utime(stdout.name, ns=(10 ** 18, 10 ** 18))
        os.utime(stderr.name, ns=(2 * 10 ** 18, 2 * 10 ** 18))  # the progress line is newer
        return Finished(None)  # still running

    monkeypatch.setattr(sweep, "launch", launch)
    run = sweep.Running(sweep.Stage("alpha 0.1 BSQ", "cifar_prune_STE.py", [],
                                    str(tmp_path / "bsq")), slot=0, gpu=None)
    line = run.status()
    assert line.startswith("[sweep] alpha 0.1 BSQ (")
    assert "epoch 2/3 step 50/391" in line and "eta 20s" in line
    assert line.endswith(f"(log {tmp_path / 'bsq' / 'stdout.txt'})")
