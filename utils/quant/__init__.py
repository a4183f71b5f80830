"""The method's numerics, on tensors: bit planes, straight-through estimators, the regularizer,
and what ``--corrected`` changes. Nothing here knows a network."""
