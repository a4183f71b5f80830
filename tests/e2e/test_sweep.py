"""The sweep: the whole recipe per alpha on a tiny run, its table, reuse of finished stages, and
several stages at once.

The full sweep runs its jobs in this process (submitit's debug executor) and their scripts too
(the same scripts, flags and output files as the subprocesses, without their import time); the
failing stage and the ``--jobs`` sweep run real local jobs (tests/e2e/test_slurm.py: SLURM).
"""
import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

import sweep
from utils.cli.errors import run_main
from utils.errors import BSQError
from utils.store.rundir import RUN_FILES
from utils.sweep import launchers, stagejob

from cifar_fixture import make_cifar
from helpers import REPO, run_script

ALPHA = 20.0  # strong enough to empty planes in one epoch of the tiny dataset
RUN = f"alpha-{ALPHA:g}"
UNIFORM = ("--uniform", "2")  # the swept fixture's uniform baseline


def sweep_args(out, data_root, *extra):
    return ["--decays", str(ALPHA), "--depth", "8", "--epochs-scale", "0.001", "--train-batch",
            "10", "--data-root", data_root, "--out", str(out), *extra]


class Finished:
    """What ``stagejob.start_process`` returns, for a script that already ran to its end."""

    def __init__(self, returncode):
        self.returncode = returncode

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        return self.returncode

    def terminate(self):
        pass

    kill = terminate


def run_in_process(command, cwd, env, stdout, stderr):
    """``stagejob.start_process`` stand-in: the stage script's ``run_main`` in this process."""
    script = importlib.import_module(os.path.splitext(os.path.basename(command[1]))[0])
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            run_main(script.main, script.get_args_parser(), command[2:])
        except SystemExit as e:
            code = e.code
    return Finished(code)


def in_this_process(patch, start=run_in_process):
    """Local jobs run by submitit's debug executor in this process, their scripts by ``start``."""
    patch.setattr(launchers.LocalLauncher, "cluster", "debug")
    patch.setattr(stagejob, "start_process", start)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep on a 50-image CIFAR-10: pretraining, 8 bits, one alpha's four stages and a
    uniform 2-bit baseline, 1 epoch each."""
    out, data_root = tmp_path_factory.mktemp("sweep"), tmp_path_factory.mktemp("tiny_data")
    make_cifar(data_root, "cifar10", n_train=50, n_test=20)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: threads only add contention on a shared CPU
    try:
        with pytest.MonkeyPatch.context() as patch:
            in_this_process(patch)
            figures = sweep.main(sweep.get_args_parser().parse_args(
                sweep_args(out, str(data_root), *UNIFORM)))
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
    flags = sweep.forwarded(parse(["--decays", "0.1", "--manualSeed", "3"]), "cifar_prune_STE.py")
    assert not {"--amp", "--channels-last", "--compile", "--cuda-graphs", "--no-cuda-graphs"} \
        & set(flags)
    flags = sweep.forwarded(parse(["--decays", "0.1", "--no-cuda-graphs", "--channels-last",
                                   "--manualSeed", "3"]), "cifar_finetune.py")
    assert "--no-cuda-graphs" in flags and "--channels-last" in flags and "--amp" not in flags


def test_targets_plan_bsq_to_each_budget_and_their_rows_name_it(tmp_path):
    args = sweep.get_args_parser().parse_args(["--targets", "10", "16", "--decays", "0.05",
                                               "--manualSeed", "1"])
    stages, _ = sweep.plan(args, str(tmp_path))
    bsq = {s.name: s.flags for s in stages if s.script == "cifar_prune_STE.py"}
    assert set(bsq) == {"alpha 0.05 BSQ", "target compression 10 BSQ",
                        "target compression 16 BSQ"}
    flags = bsq["target compression 16 BSQ"]
    assert flags[flags.index("--target-compression") + 1] == "16" and "--decay" not in flags
    assert any(s.folder.endswith(os.path.join("target-compression-16", "scratch-ft"))
               for s in stages)
    row = {"alpha": None, "target": "compression 16", "end_alpha": 0.0731}
    assert sweep.point_label(row) == "compression 16 (alpha 0.0731)"
    with pytest.raises(BSQError, match="--decays .* or --targets"):
        sweep.main(sweep.get_args_parser().parse_args([]))


def test_plan_starts_every_bsq_run_before_any_finetune_and_the_baselines_last(tmp_path):
    """Free job slots go to stages in plan order: a sweep stopped early has its BSQ points."""
    args = sweep.get_args_parser().parse_args(["--decays", "0.05", "0.1", "--targets", "10",
                                               "--uniform", "4", "--manualSeed", "1"])
    stages, _ = sweep.plan(args, str(tmp_path))
    kinds = [("bsq" if s.script == "cifar_prune_STE.py" else "scratch" if "scratch" in s.name
              else "uniform" if "uniform" in s.name else "finetune" if "finetune" in s.name
              else "start") for s in stages]
    assert kinds == ["start", "start"] + ["bsq"] * 3 + ["finetune"] * 3 + ["scratch"] * 6 \
        + ["uniform"] * 2
    names = [s.name for s in stages]
    assert all(names.index(d) < names.index(s.name) for s in stages for d in s.after)


def test_a_finished_stage_is_the_same_run_however_its_flags_are_ordered(tmp_path):
    """A stage's result.json is reused when it records the same script with the same values,
    in any order or spelling (a sweep of an earlier version wrote it), whatever its progress
    interval, and not for another value."""
    folder = str(tmp_path / "alpha-0.1" / "scratch")
    stage = sweep.Stage("alpha 0.1 scratch conversion", "convert.py",
                        ["-a", "resnet", "--depth", "20", "--act", "4", "--workers", "4",
                         "--Nbits", "8", "--model", "f.pth.tar"], folder, resumable=False)
    os.makedirs(folder)

    def recorded(*flags):
        command = [sys.executable, "old/convert.py", *flags, "--checkpoint", folder]
        with open(os.path.join(folder, stagejob.RESULT), "w") as f:
            json.dump({"acc": 50.0, "command": command}, f)
        return sweep.finished(stage)

    assert recorded("--model", "f.pth.tar", "-j", "4", "--arch", "resnet", "--Nbits", "8",
                    "--depth", "20")["acc"] == 50.0  # --act 4 is its default
    assert recorded("--model", "f.pth.tar", "-a", "resnet", "--depth", "20", "--Nbits", "4") is None
    assert recorded("--model", "f.pth.tar", "--no-such-flag") is None
    finetune = [sys.executable, "cifar_finetune.py", "--model", "b.pth.tar"]
    assert sweep.run_config(finetune + ["--progress", "600"]) == sweep.run_config(finetune)
    assert sweep.run_config(finetune + ["--lr", "0.02"]) != sweep.run_config(finetune)


def test_job_slots_go_round_the_visible_gpus(tmp_path, monkeypatch):
    """With two GPUs visible and --jobs 3, three stages ready together run on GPUs 0, 1 and 0
    again, each given its GPU in CUDA_VISIBLE_DEVICES."""
    assert [launchers.gpus_for(slot, ["0", "1"]) for slot in range(3)] == [["0"], ["1"], ["0"]]
    assert launchers.gpus_for(1, ["0", "1", "2"], per_job=2) == ["2", "0"]
    assert launchers.gpus_for(5, []) is None
    gpus = []

    def start(command, cwd, env, stdout, stderr):
        gpus.append(env.get("CUDA_VISIBLE_DEVICES"))
        stdout.write('{"acc": 10.0, "comp": 4.0}\n')
        stdout.flush()
        return Finished(0)

    monkeypatch.setattr(launchers, "visible_gpus", lambda: ["0", "1"])
    in_this_process(monkeypatch, start)
    stages = [sweep.Stage(f"s{i}", "convert.py", [], str(tmp_path / f"s{i}")) for i in range(3)]
    launcher = launchers.make_launcher(launchers.Resources(jobs=3))
    results = sweep.run_stages(stages, launcher, every=0)
    assert gpus == ["0", "1", "0"] and set(results) == {"s0", "s1", "s2"}


def test_jobs_run_ready_stages_at_once(tmp_path, swept):
    """A real sweep of two alphas with --jobs 2 on the CPU, as local submitit jobs: both BSQ
    stages start before either ends, and the table is complete. With --no-tensorboard, no stage
    writes event files."""
    out, _, data_root = swept
    float_model = out / "float" / "model_best.pth.tar"
    proc = run_script(tmp_path, "sweep.py", sweep_args(
        tmp_path / "jobs", data_root, "--decays", "20", "40", "--float-model", str(float_model),
        "--jobs", "2", "--manualSeed", "0", "--no-tensorboard"))
    events = [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("[sweep]")]
    starts = [i for i, e in enumerate(events) if e.endswith("BSQ")]
    assert len(starts) == 4 and starts[1] == starts[0] + 1  # started, started, ended, ended
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
    assert [r["alpha"] for r in rows] == [20.0, 40.0]
    bsq = json.loads((tmp_path / "jobs" / "alpha-20" / "bsq" / "result.json").read_text())
    assert "--no-tensorboard" in bsq["command"]
    assert list((tmp_path / "jobs").glob("**/events.out.tfevents.*")) == []
    assert list((tmp_path / "jobs" / "alpha-20" / "bsq" / "jobs").glob("*_result.pkl"))


def processes_of(folder):
    """The processes whose command line names ``folder``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(folder).encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("stop, started", [
    (signal.SIGINT, signal.SIG_DFL),  # Ctrl-C in a terminal
    (signal.SIGTERM, signal.SIG_IGN)])  # kill of `nohup python sweep.py ... &`: SIGINT ignored
def test_stopping_the_sweep_stops_its_local_jobs(tmp_path, swept, stop, started):
    """A signal to the driver alone: its jobs are cancelled and their scripts end with them, also
    when the sweep was started in the background, whose processes inherit SIGINT ignored."""
    out, _, data_root = swept
    args = sweep_args(tmp_path / "stopped", data_root, "--float-model",
                      str(out / "float" / "model_best.pth.tar"), "--manualSeed", "0",
                      "--epochs-scale", "0.5")  # a BSQ stage of 175 epochs: it must be stopped
    driver = subprocess.Popen([sys.executable, os.path.join(REPO, "sweep.py"), *args],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, started))
    bsq = tmp_path / "stopped" / RUN / "bsq"
    deadline = time.monotonic() + 300
    while not (bsq / "stdout.txt").exists():
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.05)
    assert processes_of(bsq)
    driver.send_signal(stop)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 128 + stop, err
    assert err.splitlines()[-1].startswith("error: interrupted; the running stages' jobs were "
                                           "cancelled")
    assert "Traceback" not in err  # the jobs' controllers, stopped, wrote into their folders
    deadline = time.monotonic() + 30
    while processes_of(bsq):
        assert time.monotonic() < deadline, processes_of(bsq)
        time.sleep(0.1)


def test_table_rows_are_the_stages_final_lines(swept):
    out, figures, _ = swept
    run = out / RUN
    bsq, ft = stage_line(run / "bsq"), stage_line(run / "finetune")
    scratch, scratch_ft = stage_line(run / "scratch"), stage_line(run / "scratch-ft")
    assert figures["rows"] == [{"alpha": ALPHA, "target": None, "end_alpha": ALPHA,
                                "avg_bits": bsq["avg_bits"], "comp": bsq["comp"],
                                "bops": ft["bops"], "bsq_acc": bsq["acc"],
                                "finetune_acc": ft["acc"],
                                "scratch_acc": scratch_ft["acc"],
                                "scratch_before_acc": scratch["acc"]}]
    assert ft["scheme"] == scratch["scheme"] == scratch_ft["scheme"] == bsq["scheme"]
    assert bsq["comp"] > 4.0
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["rows"] == figures["rows"] and saved["epochs"]["bsq"] == 1
    table = (out / "sweep.md").read_text()
    assert (f"| {ALPHA:g} | {bsq['avg_bits']:.3f} | {bsq['comp']:.2f}x | {ft['bops'] / 1e9:.3f} "
            f"| {bsq['acc']:.2f} | {ft['acc']:.2f} | {scratch_ft['acc']:.2f} |") in table


def test_uniform_rows_are_the_8_bit_start_and_the_finetuned_uniform_model(swept):
    out, figures, _ = swept
    start, converted = stage_line(out / "float-8"), stage_line(out / "uniform-2" / "convert")
    finetuned = stage_line(out / "uniform-2" / "finetune")
    assert figures["uniform"] == [
        {"bits": 8, "avg_bits": 8.0, "comp": 4.0, "bops": start["bops"],
         "convert_acc": start["acc"], "finetune_acc": None},
        {"bits": 2, "avg_bits": 2.0, "comp": 16.0, "bops": finetuned["bops"],
         "convert_acc": converted["acc"], "finetune_acc": finetuned["acc"]}]
    # every tensor at 2 bits, or at 0 where all its codes round to zero
    assert {b for bits in converted["scheme"].values() for b in bits} <= {0, 2}
    assert finetuned["scheme"] == converted["scheme"]
    assert len((out / "uniform-2" / "finetune" / "log.txt").read_text().splitlines()) == 2
    table = (out / "sweep.md").read_text()
    assert (f"| 2 | 2.000 | 16.00x | {finetuned['bops'] / 1e9:.3f} | {converted['acc']:.2f} | "
            f"{finetuned['acc']:.2f} |" in table)
    assert f"| 8 | 8.000 | 4.00x | {start['bops'] / 1e9:.3f} | {start['acc']:.2f} |  |" in table


def test_each_stage_ran_one_epoch_and_bsq_wrote_its_scheme(swept):
    out, _, _ = swept
    for stage in ("float", f"{RUN}/bsq", f"{RUN}/finetune", f"{RUN}/scratch-ft"):
        assert len((out / stage / "log.txt").read_text().strip().splitlines()) == 2, stage
    for stage in (f"{RUN}/bsq", f"{RUN}/finetune"):
        report = json.loads((out / stage / "scheme.json").read_text())
        line = stage_line(out / stage)
        assert report["scheme"] == line["scheme"]
        assert round(report["totals"]["acc"], 4) == line["acc"]
        assert round(report["totals"]["compression"], 4) == line["comp"]
        assert report["totals"]["TB"] / report["totals"]["TP"] == report["totals"]["avg_bits"]


def test_rerun_reuses_finished_stages(swept):
    out, figures, data_root = swept
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("**/stdout.txt")}
    again = sweep.main(sweep.get_args_parser().parse_args(sweep_args(out, data_root, *UNIFORM)))
    assert again["rows"] == figures["rows"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("**/stdout.txt")} == stamps


def test_a_failing_stage_is_a_one_line_error(tmp_path, swept):
    parser, data_root = sweep.get_args_parser(), swept[2]
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    args = sweep_args(tmp_path / "out", data_root, "--float-model", str(tmp_path / "notes.txt"))
    with pytest.raises(launchers.StageFailed, match="8-bit conversion exited with status 2: "
                                                    "error: checkpoint .* is not a readable"):
        sweep.main(parser.parse_args(args))


def test_sweep_draws_the_tradeoff(swept):
    out, figures, _ = swept
    pytest.importorskip("matplotlib")
    assert figures["plot"] == str(out / "tradeoff.png")
    assert (out / "tradeoff.png").read_bytes().startswith(b"\x89PNG")
    assert "![accuracy vs compression](tradeoff.png)" in (out / "sweep.md").read_text()


def test_every_training_stage_is_a_tensorboard_run(swept):
    """``tensorboard --logdir OUT`` shows each training stage as its own run, side by side."""
    out, figures, _ = swept
    runs = EventMultiplexer().AddRunsFromDirectory(str(out)).Reload().Runs()
    assert set(runs) == {"float", f"{RUN}/bsq", f"{RUN}/finetune", f"{RUN}/scratch-ft",
                         "uniform-2/finetune"}
    assert all("test/acc" in tags["scalars"] for tags in runs.values())


def test_the_status_line_shows_a_stages_latest_epoch_and_its_log(tmp_path):
    folder = tmp_path / "bsq"
    folder.mkdir()
    (folder / "stdout.txt").write_text("epoch   1/3  lr 0.1  ...  elapsed 12s  eta 24s\n")
    (folder / "stderr.txt").write_text("epoch 2/3 step 50/391  loss 1.2345 acc 55.00%  "
                                       "elapsed 17s  eta 20s\n")
    os.utime(folder / "stdout.txt", ns=(10 ** 18, 10 ** 18))
    os.utime(folder / "stderr.txt", ns=(2 * 10 ** 18, 2 * 10 ** 18))  # the progress line is newer
    run = launchers.Running(sweep.Stage("alpha 0.1 BSQ", "cifar_prune_STE.py", [], str(folder)),
                            job=None, slot=0)
    line = run.status()
    assert line.startswith("[sweep] alpha 0.1 BSQ (")
    assert "epoch 2/3 step 50/391" in line and "eta 20s" in line
    assert line.endswith(f"(log {folder / 'stdout.txt'})")


def test_a_sweep_restored_from_its_published_files_goes_on_as_the_first_run(tmp_path, swept):
    """``results/collect.py`` then ``results/restore.py`` into another folder, as on a machine
    that lost the sweep: the packed BSQ model comes back as its checkpoint, tensor for tensor;
    a rerun reuses every stage; with the finetune stage's folder gone it reruns that stage alone,
    from the restored checkpoint, to the first run's result; with the BSQ checkpoint gone too,
    the stages that BSQ needs run again first, and each ends as before. A redo stopped midway
    leaves no result.json beside its own checkpoint, so the next run does not take that
    checkpoint for the finished stage's."""
    out, figures, data_root = swept
    published, moved = tmp_path / "results", tmp_path / "moved"
    for tool, args in (("collect.py", [str(out), str(published), "--data-root", data_root]),
                       ("restore.py", [str(published), str(moved)])):
        subprocess.run([sys.executable, os.path.join(REPO, "results", tool), *args], check=True,
                       cwd=tmp_path, capture_output=True)
        if tool == "collect.py":  # a seed's sweep, published inside this one's results
            shutil.copytree(published, published / "seed-1")
    assert not (moved / "seed-1").exists()  # another sweep's stages: restored on their own
    bsq = f"{RUN}/bsq/checkpoint.pth.tar"
    first, restored = (torch.load(folder / bsq, weights_only=True) for folder in (out, moved))
    assert restored["state_dict"].keys() == first["state_dict"].keys()
    assert all(torch.equal(v, restored["state_dict"][k]) for k, v in first["state_dict"].items())
    assert restored["Nbit_dict"] == first["Nbit_dict"]
    assert (published / RUN / "finetune" / "model.bsq").exists()
    assert not (moved / "float-8" / "model_best.pth.tar").exists()  # conversions are not packed

    def rerun(start=run_in_process):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the first run
        try:
            with pytest.MonkeyPatch.context() as patch:
                in_this_process(patch, start)
                return sweep.main(sweep.get_args_parser().parse_args(
                    sweep_args(moved, data_root, *UNIFORM)))
        finally:
            torch.set_num_threads(threads)

    def ran():
        return sorted(str(p.parent.relative_to(moved)) for p in moved.glob("**/stdout.txt"))

    assert rerun()["rows"] == figures["rows"] and ran() == []
    shutil.rmtree(moved / RUN / "finetune")
    again = rerun()
    assert ran() == [f"{RUN}/finetune"] and again["rows"] == figures["rows"]
    assert same_line(moved, out, f"{RUN}/finetune")
    (moved / bsq).unlink()
    shutil.rmtree(moved / RUN / "finetune")

    def bsq_stopped_after_an_epoch(command, *args):
        if not command[1].endswith("cifar_prune_STE.py"):
            return run_in_process(command, *args)
        assert command[-1] == "--overwrite"  # redone whole: the script removes the run's files
        for name in RUN_FILES:
            (moved / RUN / "bsq" / name).unlink(missing_ok=True)
        (moved / bsq).write_bytes(b"the redone run's first epoch")
        return Finished(143)  # SIGTERM, its last epoch saved

    with pytest.raises(launchers.StageFailed, match="BSQ was stopped"):
        rerun(bsq_stopped_after_an_epoch)
    assert not (moved / RUN / "bsq" / "result.json").exists()  # its checkpoint is not the result
    assert not (moved / RUN / "finetune").exists()
    (moved / bsq).unlink()  # this stand-in's epoch cannot be resumed; a real one would be
    assert rerun()["rows"] == figures["rows"]
    assert ran() == [f"{RUN}/bsq", f"{RUN}/finetune", "float", "float-8"]
    for stage in ("float", "float-8", f"{RUN}/bsq"):
        assert same_line(moved, out, stage), stage


def same_line(out, other, stage):
    """Whether a stage's final line is the same in two sweep folders, but for their paths."""
    a, b = (stage_line(folder / stage) for folder in (out, other))
    return {**a, "checkpoint": None} == {**b, "checkpoint": None}


def test_no_scratch_plans_no_baseline_and_its_rows_leave_the_cell_empty(tmp_path):
    args = sweep.get_args_parser().parse_args(["--decays", "0.05", "--no-scratch",
                                               "--manualSeed", "1"])
    stages, _ = sweep.plan(args, str(tmp_path))
    assert [s.name for s in stages] == ["pretraining", "8-bit conversion", "alpha 0.05 BSQ",
                                        "alpha 0.05 finetune"]
    row = {"alpha": 0.05, "target": None, "avg_bits": 4.5, "comp": 7.1, "bops": None,
           "bsq_acc": 86.5, "finetune_acc": 87.0, "scratch_acc": None}
    table = sweep.table({"config": {**vars(args), "dataset": "cifar10", "act": 4}, "rows": [row],
                         "uniform": [], "network": "ResNet-20", "device": "cpu",
                         "epochs": {"train": 1, "bsq": 1, "Prun_Int": 1, "finetune": 1},
                         "float_model": "f", "float_acc": 87.3})
    assert "| 0.05 | 4.500 | 7.10x |  | 86.50 | 87.00 |  |" in table
