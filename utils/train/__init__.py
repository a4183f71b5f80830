"""The training loop: steps, epochs, CUDA graphs, torchrun, random generator states."""
