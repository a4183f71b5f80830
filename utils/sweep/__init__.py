"""sweep.py's jobs: each stage a submitit job, on this machine or a SLURM cluster."""
