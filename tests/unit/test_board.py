"""TensorBoard event files (utils/report/board.py) read back as TensorBoard reads them: rows at
their epochs, a resumed run's epochs once, a fresh run's folder cleared, nothing with the flag
off."""
import argparse
import math
import os

import numpy as np

from utils.cli.flags import Parser, add_output_flags
from utils.report.board import NO_BOARD, TAGS, Board, open_board

from helpers import board_hparams, board_scalars


def row(epoch, acc):
    return {"epoch": epoch, "lr": 0.1, "train_loss": 1.0 / epoch, "train_acc": acc, "reg": 2.0,
            "test_loss": 1.5, "test_acc": acc + 1, "comp": 4.0 + epoch, "avg_bits": 8.0 / epoch,
            "seconds": 3.0}


def events(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("events.out.tfevents."))


def test_rows_go_to_their_epochs_and_precisions_to_the_epoch_they_start(tmp_path):
    board = Board(str(tmp_path))
    board.precisions(1, {"conv1": [8, 0], "fc": [8, 8]})
    for epoch in (1, 2):
        board.epoch(row(epoch, 10.0 * epoch))
    board.precisions(3, {"conv1": [5, 0], "fc": [3, 2]})
    board.epoch(row(3, 30.0))
    board.close()
    scalars = board_scalars(tmp_path)
    for column, tag in TAGS.items():
        assert scalars[tag] == [(e, np.float32(row(e, 10.0 * e)[column])) for e in (1, 2, 3)]
    assert scalars["precision/conv1"] == [(1, 8), (3, 5)]
    assert scalars["precision/fc"] == [(1, 8), (3, 3)]
    assert scalars["precision_bias/fc"] == [(1, 8), (3, 2)]


def test_a_resumed_run_shows_each_epoch_once_and_a_fresh_run_starts_clean(tmp_path):
    """The first run logged epochs 1-3 but saved its checkpoint at epoch 2 only (killed during
    epoch 3's save, its writer never closed): the resumed run's epoch 3 replaces the first's."""
    first = Board(str(tmp_path))
    first.precisions(1, {"conv1": [8, 0]})
    for epoch in (1, 2, 3):
        if epoch == 3:
            first.precisions(3, {"conv1": [6, 0]})
        first.epoch(row(epoch, 10.0))
    assert board_scalars(tmp_path)["precision/conv1"] == [(1, 8), (3, 6)]
    resumed = Board(str(tmp_path), resume_epoch=2)
    resumed.precisions(3, {"conv1": [5, 0]})
    for epoch in (3, 4):
        resumed.epoch(row(epoch, 50.0))
    resumed.close()
    assert len(events(tmp_path)) == 2  # appended: the first run's file is kept
    scalars = board_scalars(tmp_path)
    assert scalars["train/acc"] == [(1, 10.0), (2, 10.0), (3, 50.0), (4, 50.0)]
    assert scalars["precision/conv1"] == [(1, 8), (3, 5)]
    again = Board(str(tmp_path))  # not resumed: --overwrite, or no epoch was ever saved
    again.epoch(row(1, 70.0))
    again.close()
    assert len(events(tmp_path)) == 1
    assert board_scalars(tmp_path)["train/acc"] == [(1, 70.0)]


def test_final_figures_are_hparams_and_non_finite_numbers_are_left_out(tmp_path):
    board = Board(str(tmp_path))
    board.epoch({**row(1, 10.0), "comp": math.inf})
    flags = argparse.Namespace(decay=0.02, L1=True, schedule=[150, 250], gpu_id=None, arch="resnet")
    figures = {"acc": 11.0, "best_acc": 12.0, "comp": None, "avg_bits": 0.0,
               "scheme": {"conv1": [0, 0]}}
    assert board.finish(flags, figures) is figures
    scalars = board_scalars(tmp_path)
    assert "model/compression" not in scalars
    assert scalars["final/acc"] == [(2, 11.0)] and scalars["final/best_acc"] == [(2, 12.0)]
    assert "final/comp" not in scalars and scalars["precision/conv1"] == [(2, 0)]
    hparams, metrics = board_hparams(tmp_path)
    assert hparams == {"decay": 0.02, "L1": 1.0, "schedule": "150 250", "arch": "resnet"}
    assert sorted(metrics) == ["final/acc", "final/avg_bits", "final/best_acc"]


def test_a_run_that_fails_before_its_first_epoch_writes_nothing(tmp_path):
    board = Board(str(tmp_path), resume_epoch=4)
    board.precisions(5, {"conv1": [8, 0]})  # re-quantized, then the epoch's loss is non-finite
    assert os.listdir(tmp_path) == []


def test_no_tensorboard_writes_nothing(tmp_path):
    parser = Parser()
    add_output_flags(parser)
    args = parser.parse_args(["--no-tensorboard"])
    args.checkpoint = str(tmp_path)
    board = open_board(args)
    assert board is NO_BOARD
    board.epoch(row(1, 10.0))
    board.precisions(1, {"conv1": [8, 0]})
    assert board.finish(args, {"acc": 1.0}) == {"acc": 1.0}
    assert os.listdir(tmp_path) == []
    args = parser.parse_args([])
    args.checkpoint = str(tmp_path)
    assert isinstance(open_board(args, {"epoch": 7}), Board)
    assert open_board(args, {"epoch": 7}).resume_epoch == 7


def test_a_budgeted_runs_alpha_goes_with_its_epoch(tmp_path):
    board = Board(str(tmp_path))
    for epoch, alpha in ((1, 0.01), (2, 0.0125)):
        board.epoch({**row(epoch, 10.0), "alpha": alpha})
    board.close()
    assert board_scalars(tmp_path)["bsq/alpha"] == [(1, np.float32(0.01)), (2, np.float32(0.0125))]
