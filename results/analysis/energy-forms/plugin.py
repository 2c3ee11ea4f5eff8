"""Two more scalar-energy forms on the UNet (torch), registered as a plugin for the measurement in
README.md beside this file; the zoo's own `energy` head is E = g(x, t) / sigma_t with g a linear
readout of the backbone's pooled features.

- energyin-unet:   E = <x, f(x, t)> / sigma_t      (f the free UNet's x-shaped map)
- energyhalf-unet: E = ||f(x, t)||^2 / (2 sigma_t)

Both start from the free UNet's factory, so they get its parameter names and initial weights.
"""

from __future__ import annotations

from torch import nn

import zoo
from fields.torch.heads import grad_of_scalar
from zoo.registry import get_info


class InnerEnergy(nn.Module):
    def __init__(self, net, schedule):
        super().__init__()
        self.net, self.schedule = net, schedule

    def energy(self, x, t):
        f = self.net(x, t).reshape(x.shape)
        return (x * f).flatten(1).sum(1) / self.schedule.sigma(t)

    def score(self, x, t):
        return -grad_of_scalar(self.energy, x, t)


class HalfNormEnergy(InnerEnergy):
    def energy(self, x, t):
        f = self.net(x, t).reshape(x.shape)
        return 0.5 * f.flatten(1).pow(2).sum(1) / self.schedule.sigma(t)


def _factory(cls):
    def make(shape, schedule, **opts):
        return cls(get_info("free-unet", "torch").factory(shape, schedule, **opts).net, schedule)

    return make


_FREE = get_info("free-unet", "torch")
for _name, _cls in (("energyin-unet", InnerEnergy), ("energyhalf-unet", HalfNormEnergy)):
    zoo.register(_name, "torch", head="custom", backbone="unet", conservative=True,
                 options=_FREE.options, data="image", small=_FREE.small)(_factory(_cls))
