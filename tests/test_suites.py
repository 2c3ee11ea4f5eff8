"""Suites resolve to the runs they promise: torch twins, per-backend field limits, curves."""

from __future__ import annotations

import pytest

from zoo.registry import ZooError
from zoo.sweep.suites import SUITES, resolve, select

SUITE = """
[s]
fields = ["free-mlp", "energy-mlp"]
datasets = ["gmm8", "moons"]
seeds = 3
backends = ["jax", "torch"]
{extra}
"""


def jobs(tmp_path, extra=""):
    f = tmp_path / "s.toml"
    f.write_text(SUITE.format(extra=extra))
    return resolve("s", suite_file=f, root=tmp_path)


def test_torch_twins_of_seed_zero_only(tmp_path):
    js = jobs(tmp_path, "seeds_per_backend = {torch = 1}")
    torch = sorted(j.label for j in js if j.backend == "torch")
    assert torch == ["gmm8/energy-mlp-torch-s0", "gmm8/free-mlp-torch-s0",
                     "moons/energy-mlp-torch-s0", "moons/free-mlp-torch-s0"]
    assert sum(j.backend == "jax" for j in js) == 2 * 2 * 3


def test_backend_fields_limit_a_backend(tmp_path):
    js = jobs(tmp_path, 'backend_fields = {torch = ["free-*"]}')
    assert {j.arch for j in js if j.backend == "torch"} == {"free-mlp"}
    assert {j.arch for j in js if j.backend == "jax"} == {"free-mlp", "energy-mlp"}


def test_dataset_fields_and_dataset_train(tmp_path):
    """A dataset limited to some fields, and trained with its own settings over the suite's."""
    js = jobs(tmp_path, 'dataset_fields = {moons = ["energy-*"]}\n'
                        '[s.train]\nsteps = 100\n'
                        '[s.dataset_train.moons]\nsteps = 400\neval_at = [200]')
    assert {j.arch for j in js if j.data == "moons"} == {"energy-mlp"}
    assert {j.arch for j in js if j.data == "gmm8"} == {"free-mlp", "energy-mlp"}
    assert {(j.data, j.spec["train"]["steps"], tuple(j.spec["train"]["eval_at"]))
            for j in js} == {("gmm8", 100, ()), ("moons", 400, (200,))}


def test_backbone_train_between_suite_and_dataset(tmp_path):
    """A backbone's train settings override the suite's, and a dataset's override both."""
    f = tmp_path / "s.toml"
    f.write_text('[s]\nfields = ["free-unet", "free-dit", "free-mlp"]\n'
                 'datasets = ["digits", "latent-digits"]\nbackends = ["torch"]\n'
                 '[s.train]\nsteps = 100\nbatch = 32\n'
                 '[s.backbone_train.dit]\nsteps = 400\neval_at = [200]\n'
                 '[s.backbone_train.mlp]\nsteps = 300\nbatch = 16\n'
                 '[s.dataset_train.latent-digits]\nsteps = 500\n')
    got = {(j.data, j.arch, j.spec["train"]["steps"], j.spec["train"]["batch"],
            tuple(j.spec["train"]["eval_at"])) for j in resolve("s", suite_file=f, root=tmp_path)}
    assert got == {("digits", "free-unet", 100, 32, ()), ("digits", "free-dit", 400, 32, (200,)),
                   ("digits", "free-mlp", 300, 16, ()), ("latent-digits", "free-mlp", 500, 16, ())}


@pytest.mark.parametrize("extra, why", [
    ("[s.backbone_train.dit]\nsteps = 10", "backbone_train names dit"),
    ("[s.backbone_train.mlp]\nsteps = 0", "backbone_train.mlp"),
    ('backbone_train = {mlp = 3}', "backbone_train must map"),
    ('dataset_fields = {rings = ["free-*"]}', "dataset_fields"),
    ('dataset_fields = {moons = "free-mlp"}', "dataset_fields"),
    ("[s.dataset_train.moons]\nsteps = -1", "dataset_train.moons"),
    ("[s.dataset_train.moons]\nwidth = 3", "unknown train"),
    ("[s.dataset_train.rings]\nsteps = 10", "dataset_train"),
    ("seeds_per_backend = {torch = 0}", "seeds_per_backend"),
    ("seeds_per_backend = {tpu = 1}", "seeds_per_backend"),
    ('backend_fields = {torch = "free-mlp"}', "backend_fields"),
    ("[s.train]\nsteps = 100\neval_at = [50, 100]", "eval_at"),
    ("[s.train]\neval_at = [0]", "eval_at"),
])
def test_bad_suite_settings_are_refused(tmp_path, extra, why):
    with pytest.raises(ZooError, match=why):
        jobs(tmp_path, extra)


def test_builtin_suites():
    std = resolve("standard")
    assert {(j.data, j.spec["train"]["steps"]) for j in std} == {
        (d, 100000 if d == "checkerboard" else 30000) for d in SUITES["standard"]["datasets"]}
    assert all(j.spec["train"]["eval_at"] for j in std)  # every standard run has its curve
    assert len(std) == 6 * 6 * 3 + 6 * 6  # 3 JAX seeds and a torch twin of seed 0
    quick = resolve("quick")
    # the quick suite trains like the standard one, so their verdicts can agree
    assert {j.spec["train"]["steps"] for j in quick} == {30000}
    assert sorted(j.label for j in quick if j.backend == "torch") == ["gmm8/free-mlp-torch-s0"]
    assert {j.arch for j in quick} == {"free-mlp", "energy-mlp", "energysq-mlp"}
    same = {j.label: j.spec for j in std}  # a quick run is trained as its standard twin
    for j in quick:
        want = {**same[j.label], "train": {**same[j.label]["train"], "eval_at": []}}
        assert {k: v for k, v in j.spec.items() if k != "curve"} == {
            k: v for k, v in want.items() if k != "curve"}
    assert SUITES["quick"]["options"] == SUITES["standard"]["options"]
    img = resolve("images")  # UNet and DiT on the images, the MLP on the latents, nothing crossed
    assert {(j.data, j.arch.rpartition("-")[2]) for j in img} == {
        (d, b) for d in ("digits", "digits-gmm") for b in ("unet", "dit")} | {
        ("latent-digits", "mlp")}
    assert len(img) == (2 * 2 + 1) * 6 * (3 + 1)  # 3 JAX seeds and a torch twin of seed 0
    assert {(j.backend, j.seed) for j in img} == {("jax", 0), ("jax", 1), ("jax", 2), ("torch", 0)}
    assert {(j.data, j.arch.rpartition("-")[2], j.spec["train"]["steps"], j.spec["train"]["batch"])
            for j in img} == {(d, "unet", 6000, 64) for d in ("digits", "digits-gmm")} | {
        (d, "dit", 30000, 64) for d in ("digits", "digits-gmm")} | {
        ("latent-digits", "mlp", 30000, 128)}


def test_select_runs_a_slice_in_the_patterns_order(tmp_path):
    js = jobs(tmp_path, "seeds_per_backend = {torch = 1}")
    got = [j.label for j in select(js, ("moons/*-jax-s2", "gmm8/free-mlp-*", "moons/*-jax-s2"))]
    assert got == ["moons/free-mlp-jax-s2", "moons/energy-mlp-jax-s2", "gmm8/free-mlp-jax-s0",
                   "gmm8/free-mlp-jax-s1", "gmm8/free-mlp-jax-s2", "gmm8/free-mlp-torch-s0"]
    assert all(j.spec == js[0].spec for j in select(js, ("*",)))  # the suite's settings
    assert select(js) == js
    with pytest.raises(ZooError, match="--only 'rings/\\*' matches none of the suite's 16 runs"):
        select(js, ("rings/*",))
