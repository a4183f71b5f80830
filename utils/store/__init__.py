"""What a run leaves on disk: atomic files, checkpoints, run folders, log.txt, packed models."""
