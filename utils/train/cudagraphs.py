"""Whole steps replayed as one CUDA graph.

A BSQ step on ResNet-20 is a few thousand small kernels (the weights built from their planes,
the activation quantizers, the regularizer's 21 groups, the clamp), so on a GPU its time is the
host launching them, not the arithmetic. ``CUDAGraphStep`` records the step once and from then on
replays it with one launch: forward, loss, backward, optimizer step and clamp together. The
replayed kernels are the eager ones, so results are those of the eager step. A step that cannot
be captured runs eagerly, with one warning line.
"""
import sys

import torch


class CUDAGraphStep:
    """``step(x, y) -> tensor``, run eagerly for ``warmup`` calls, then captured and replayed.

    ``step`` must make no host-device synchronisation and no host-to-device copy (after its
    warm-up calls), and keep its persistent state (parameters, optimizer state, BatchNorm
    statistics) in tensors it updates in place. Replays copy ``x`` and ``y`` into the static
    inputs of the capture and return the capture's static output, which the next call
    overwrites. Batches of another shape than the first call's (the last, partial batch of an
    epoch) run eagerly.
    ``key()`` names the host values the capture bakes in (the learning rates): when it changes,
    the step is captured again. Warm-up calls are real steps.
    """

    def __init__(self, step, key=lambda: None, warmup=3):
        self.step, self.key, self.warmup = step, key, warmup
        self.graph, self.shape, self.warm, self.side_stream = None, None, 0, None
        self.eager = False  # set when a capture failed: the step then always runs eagerly

    def __call__(self, x, y):
        if self.graph is not None and self.key() != self.captured_key:
            self.graph = None  # a new learning rate
        self.shape = self.shape or x.shape  # an epoch's first batch is a full one
        if self.eager or x.shape != self.shape:
            return self.step(x, y)
        if self.graph is None:
            if self.warm < self.warmup:
                self.warm += 1
                return self._on_side_stream(x, y)
            try:
                self._capture(x, y)
            except RuntimeError as e:  # nothing ran: the batch is trained eagerly below
                self.eager = True
                reason = " ".join(str(e).split())[:200]
                print(f"warning: CUDA graph capture failed ({reason}); running eagerly (pass "
                      "--no-cuda-graphs to skip the attempt)", file=sys.stderr, flush=True)
                return self.step(x, y)
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.out

    def _capture(self, x, y):
        self.x, self.y = x.clone(), y.clone()
        self.captured_key = self.key()
        self.graph, self.out = self._record(lambda: self.step(self.x, self.y))

    def _record(self, fn):
        """Capture ``fn()`` into a new CUDA graph; returns the graph and fn's static output.

        The capture runs on the warm-up stream, whose library handles and workspaces the
        warm-up created. ``thread_local``: only this thread's CUDA calls are barred during the
        capture, so a DataLoader's worker-feeding threads (``--loader release``) may go on.
        """
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._stream(), capture_error_mode="thread_local"):
            out = fn()
        return graph, out

    def _on_side_stream(self, x, y):
        """A warm-up call, on a side stream as capture requires: lazily created library handles
        and autograd's stream bookkeeping must not first appear inside the capture."""
        stream = self._stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out = self.step(x, y)
        torch.cuda.current_stream().wait_stream(stream)
        return out

    def _stream(self):
        """The one side stream of warm-ups and captures, made on first use."""
        if self.side_stream is None:
            self.side_stream = torch.cuda.Stream()
        return self.side_stream
