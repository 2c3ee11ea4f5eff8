"""A broken third-party field for the sweep tests: its score is NaN wherever it is evaluated."""

import torch
from torch import nn

import zoo


class NaNField(nn.Module):
    def __init__(self, dim, schedule):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))

    def score(self, x, t):
        return x * self.w + float("nan")


@zoo.register("nan-sweep", "torch", head="custom")
def make(dim, schedule):
    """A field whose score is NaN (test plugin)."""
    return NaNField(dim, schedule)
