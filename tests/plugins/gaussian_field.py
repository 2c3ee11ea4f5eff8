"""A third-party field, outside the package: the exact score of a learnable Gaussian N(mu, v I)
diffused by the forward process, s = -(x - alpha_t mu) / (alpha_t^2 v + sigma_t^2)."""

import torch
from torch import nn

import zoo


class DiffusedGaussian(nn.Module):
    def __init__(self, dim, schedule):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_v = nn.Parameter(torch.zeros(()))
        self.schedule = schedule

    def score(self, x, t):
        a, s = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]
        return -(x - a * self.mu) / (a**2 * self.log_v.exp() + s**2)


@zoo.register("test-gaussian", "torch", head="custom", conservative=True)
def make(dim, schedule):
    """A learnable diffused Gaussian (test plugin)."""
    return DiffusedGaussian(dim, schedule)
