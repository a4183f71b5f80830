"""Activation quantizers of the quantized ResNet blocks (docs/method.md, "Activations")."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.quant.ste import ActQuant, PACTClip

PACT_INIT = 10.0


class ActQuantizer(nn.Module):
    """ReLU6 (act >= 4) or PACT (act <= 3), then the per-batch max-scaled act-bit quantizer.

    ``act = 0`` disables the quantizer; PACT clipping still applies, as in the release. PACT's
    learnable clipping level is the scalar parameter ``alpha`` (release name ``reluM.alpha``).
    """

    def __init__(self, act):
        super().__init__()
        self.act = act
        if act <= 3:
            self.alpha = nn.Parameter(torch.tensor(PACT_INIT))

    def forward(self, x):
        x = F.relu6(x) if self.act >= 4 else PACTClip.apply(x, self.alpha)
        return ActQuant.apply(x, self.act) if self.act else x

    def extra_repr(self):
        return f"act={self.act}"
