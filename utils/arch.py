"""What the flags, the checkpoints and the model share about the CIFAR ResNet: its depth is
``6n + 2`` for ``n`` BasicBlocks in each of its three stages."""
DEPTHS = "20, 32, 44, 56 or 110"  # the usual ones


def blocks_per_stage(depth):
    """``n`` for a ResNet of ``depth = 6n + 2``; ``ValueError`` for any other depth."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"{depth} is not 6n+2: use {DEPTHS}")
    return (depth - 2) // 6


def depth_of(blocks):
    """The depth of a ResNet with ``blocks`` BasicBlocks per stage."""
    return 6 * blocks + 2
