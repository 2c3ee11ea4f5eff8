"""The registry contract: decorator registration, duplicates, lookups with suggestions."""

from __future__ import annotations

import pytest

import zoo
from zoo import registry


@pytest.fixture
def scratch():
    """Registrations made in a test are removed afterwards."""
    zoo.list_fields()  # load the built-ins before taking the snapshot
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_register_create_and_list(scratch):
    @zoo.register("scratch-field", "torch", head="free", backbone="mlp")
    def make(dim, schedule, width=8):
        from fields.torch.heads import FreeField
        from fields.torch.mlp import MLP

        return FreeField(MLP((dim,), 1, width=width, depth=1), schedule)

    assert "scratch-field" in zoo.list_fields("scratch-*")
    assert zoo.list_fields("scratch-*", backend="jax") == []
    f = zoo.create("scratch-field", "torch", dim=3, width=4)
    assert f.net.layers[0].out_features == 4


def test_duplicate_registration_raises(scratch):
    with pytest.raises(zoo.ZooError, match="already registered"):
        zoo.register("free-mlp", "torch")(lambda dim, schedule: None)


def test_unknown_names_suggest_close_matches():
    with pytest.raises(zoo.ZooError, match="did you mean free-mlp"):
        zoo.create("fre-mlp", "torch", dim=2)
    with pytest.raises(zoo.ZooError, match="unknown backend"):
        zoo.create("free-mlp", "tensorflow", dim=2)
    with pytest.raises(zoo.ZooError, match="unexpected keyword|got an unexpected"):
        zoo.create("free-mlp", "torch", dim=2, widht=3)


def test_list_pattern_is_fnmatch():
    assert zoo.list_fields("*-mlp") == sorted(n for n in zoo.list_fields() if n.endswith("-mlp"))
    assert zoo.list_fields("nothing-*") == []


def test_readme_example_registers_a_working_field(scratch):
    """The README's 'Add a field' snippet runs as written and yields a trainable field."""
    import re
    from pathlib import Path

    import numpy as np

    from zoo import backends

    text = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"## Add a field\s+```python\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    f = zoo.create("tanh-mlp", "torch", dim=2)
    s = backends.get("torch").score(f, np.zeros((3, 2), np.float32), np.ones(3, np.float32))
    assert s.shape == (3, 2) and np.all(np.isfinite(s))


def test_readme_lists_every_head_and_backbone():
    """The README's tables are written from zoo/builtin.py's: a new row there must reach them."""
    from pathlib import Path

    from zoo.builtin import BACKBONES, HEADS

    text = (Path(__file__).parent.parent / "README.md").read_text()
    for name in HEADS:
        assert f"\n| `{name}` |" in text, name
    for name, bb in BACKBONES.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), "")
        assert row, name
        for opt in bb.options:
            assert f"{opt}=" in row, (name, opt)


def test_every_head_on_every_backbone_in_both_backends():
    from zoo.builtin import BACKBONES, HEADS

    for head in HEADS:
        for bb in BACKBONES:
            assert zoo.registry.backends_of(f"{head}-{bb}") == ["torch", "jax"]
            info = zoo.get_info(f"{head}-{bb}", "jax")
            assert info.head == head and info.backbone == bb
            assert set(info.options) >= set(BACKBONES[bb].options)


def test_jax_fields_are_built_abstractly_with_the_same_weights():
    """zoo.create builds an Equinox field abstractly (eqx.filter_eval_shape: its layers' jax.random
    initialisers, one XLA compile per shape, never run) and fills it with zoo.init's numbers:
    the same numbers as building it for real and loading them. A factory that cannot be traced
    abstractly, or a parameter no init rule draws (it keeps its factory value), takes the
    ordinary way and gets the same result."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from zoo.backends import jax_backend as jb
    from zoo.init import init_params

    built = []

    class Net(eqx.Module):
        lin: eqx.nn.Linear
        scale: jax.Array  # no init rule draws it: the factory's value is kept

        def __init__(self, traceable=True):
            built.append("abstract" if isinstance(jnp.zeros(()), jax.core.Tracer) else "real")
            self.lin = eqx.nn.Linear(3, 4, key=jax.random.PRNGKey(1))
            self.scale = jnp.full((), 0.5)
            if not traceable:
                float(self.lin.weight[0, 0])  # a concrete value: no abstract build

    def make(**kw):
        return lambda: Net(**kw)

    def draw(current):
        return init_params(current, np.random.default_rng(0))

    real = Net()
    want = init_params(jb.named_params(real), np.random.default_rng(0))
    for kw in ({}, {"traceable": False}):
        built.clear()
        got = jb.named_params(jb.create_field(make(**kw), draw, "float64"))
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[k], want[k]) for k in want)
        assert got["scale"] == 0.5
        assert built[-1] == "real"  # "scale" needs the factory's value: built for real

    # every parameter drawn by a rule: the abstract build alone, no real one
    class Plain(eqx.Module):
        lin: eqx.nn.Linear

        def __init__(self):
            built.append("abstract" if isinstance(jnp.zeros(()), jax.core.Tracer) else "real")
            self.lin = eqx.nn.Linear(3, 4, key=jax.random.PRNGKey(1))

    built.clear()
    field = jb.create_field(Plain, draw, "float32")
    assert built == ["abstract"]
    want = init_params(jb.named_params(Plain()), np.random.default_rng(0))
    got = jb.named_params(field)
    assert all(np.array_equal(got[k], want[k].astype(np.float32)) for k in want)
    assert field.lin.weight.dtype == jnp.float32 and isinstance(field.lin.weight, jax.Array)
    out = field.lin(jnp.ones(3, jnp.float32))
    assert out.shape == (4,) and bool(jnp.all(jnp.isfinite(out)))
