"""A sweep stage as a job (utils/sweep/stagejob.py) and the launcher flags
(utils/sweep/launchers.py): the command a job runs now, under torchrun above one process, and
what a requeue hands on."""
import pickle
import subprocess
import sys
import time

import pytest

import sweep
from utils.errors import BSQError
from utils.sweep.launchers import Resources, gpus_for
from utils.sweep.stagejob import StageJob

COMMAND = [sys.executable, "/repo/cifar_prune_STE.py", "--decay", "0.1", "--checkpoint", "run"]


def test_a_stage_resumes_from_its_checkpoint_and_a_conversion_is_redone(tmp_path):
    job = StageJob("BSQ", COMMAND, str(tmp_path))
    assert job.script_argv() == COMMAND
    (tmp_path / "checkpoint.pth.tar").write_bytes(b"")
    assert job.script_argv() == COMMAND + ["--resume", str(tmp_path / "checkpoint.pth.tar")]
    conversion = StageJob("8 bits", COMMAND, str(tmp_path), resumable=False)
    assert conversion.script_argv() == COMMAND + ["--overwrite"]


def test_more_than_one_process_is_one_torchrun(tmp_path):
    assert StageJob("BSQ", COMMAND, str(tmp_path)).argv(task=None) == COMMAND  # one node: no task
    argv = StageJob("BSQ", COMMAND, str(tmp_path), processes=2).argv(task=None)
    assert argv == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                    "--standalone", *COMMAND[1:]]


def test_a_requeue_hands_on_the_job_without_its_process_and_with_its_time(tmp_path):
    job = StageJob("BSQ", COMMAND, str(tmp_path), env={"CUDA_VISIBLE_DEVICES": "1"})
    job._process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    job._start = time.monotonic() - 5.0
    again = job.checkpoint()  # what submitit calls on the requeue signal
    assert job._process.returncode is not None  # the script was stopped
    assert again.function is job and job.seconds >= 5.0
    copy = pickle.loads(pickle.dumps(job))
    assert copy._process is None and copy.seconds == job.seconds
    assert copy.env == {"CUDA_VISIBLE_DEVICES": "1"} and copy.command == COMMAND


def test_slots_share_the_gpus_round_robin():
    assert [gpus_for(slot, ["0", "1", "2"]) for slot in range(4)] == [["0"], ["1"], ["2"], ["0"]]
    assert [gpus_for(slot, ["a", "b", "c", "d"], 2) for slot in range(3)] == \
        [["a", "b"], ["c", "d"], ["a", "b"]]
    assert gpus_for(0, ["0"], 0) == [] and gpus_for(3, []) is None


def test_slurm_flags_need_the_slurm_launcher():
    parse = sweep.get_args_parser().parse_args
    resources = Resources.from_args(parse(["--decays", "1", "--launcher", "slurm", "--mem", "8",
                                           "--slurm-param", "qos=high", "--slurm-param",
                                           "exclusive"]))
    assert resources.mem_gb == 8 and resources.params == (("qos", "high"), ("exclusive", True))
    assert resources.jobs is None and resources.processes == 1
    with pytest.raises(BSQError, match="--partition sets a SLURM job"):
        Resources.from_args(parse(["--decays", "1", "--partition", "gpu"]))
