"""The oracle experiment (zoo/oracle/): error fields checked against their defining equations.

- ``stein`` errors satisfy div(rho_t e) = div e + S . e = 0 (autodiff divergence, float64) to
  rounding, relative to the size of the two terms, while divfree / generic / gradient errors do
  not; the stein field's Jacobian is clearly asymmetric (NAsym far from 0).
- Each error has the requested relative size m at fresh Monte-Carlo points and times off the
  calibration grid, within 2%.
- A small run completes, writes its table, CSV, JSON and figure, and the CLI refuses bad input
  with one line and exit code 2 without writing anything.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

import zoo
from zoo import oracle as O
from zoo.diagnostics import check_field

SCHED = zoo.make_schedule("ou")
TIMES = (0.0137, 0.21, 1.7)  # between the calibration knots, from the sharp to the smooth regime


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def exacts():
    return {d: zoo.create("exact", "torch", data=d, schedule=SCHED, dtype="float64")
            for d in ("gmm8", "gmm-d", "checkerboard")}


def points(data: str, t: float, n: int, seed: int):
    ds = zoo.get_dataset(data)
    x = O.forward_draw(ds, SCHED, t, n, np.random.default_rng([99, seed]))
    return torch.as_tensor(x), torch.full((n,), t, dtype=torch.float64)


@pytest.mark.parametrize("data", ["gmm8", "gmm-d", "checkerboard"])
def test_stein_error_is_stein_null_and_the_others_are_not(data, exacts):
    """r = div e + S . e vanishes for stein (|r| ~ 1e-16 of its terms) and is O(1) otherwise."""
    rel = {}
    for kind in ("stein", "divfree", "generic", "gradient"):
        p = O.Perturbation(exacts[data], data, kind, SCHED, seed=3, grid=8, points=2048)
        f = O.PerturbedScore(p, 0.7)
        worst = 0.0
        for t in TIMES:
            x, tt = points(data, t, 64, 0)
            r = O.stein_residual(f, x, tt)
            size = torch.sqrt((r["div"] ** 2 + r["s_dot_e"] ** 2).mean())
            assert size > 1e-3  # the terms themselves are far from zero: they cancel
            worst = max(worst, float(r["r"].abs().max() / size))
        rel[kind] = worst
    assert rel["stein"] < 1e-10, rel
    for kind in ("divfree", "generic", "gradient"):
        assert rel[kind] > 0.05, rel


@pytest.mark.parametrize("data", ["gmm8", "gmm-d"])
def test_stein_error_is_not_conservative(data, exacts):
    """NAsym of S + e (check_field, exact Jacobians): 0 for none / gradient, clearly > 0 for stein."""
    nasym = {}
    for kind in ("none", "gradient", "stein"):
        p = O.Perturbation(exacts[data], data, kind, SCHED, seed=0, grid=8, points=2048)
        r = check_field(O.PerturbedScore(p, 0.5), "torch", data=data, schedule=SCHED,
                        dtype="float64", times=TIMES, n_points=64, n_loops=4, nodes=8)
        nasym[kind] = r["summary"]["nasym_mean"]
    assert nasym["none"] < 1e-20 and nasym["gradient"] < 1e-20, nasym
    assert nasym["stein"] > 0.02, nasym


@pytest.mark.parametrize("data,kinds", [("gmm8", ("gradient", "divfree", "stein", "generic")),
                                        ("gmm-d", ("stein",))])
def test_every_error_has_the_requested_magnitude(data, kinds, exacts):
    """sqrt(E|e|^2 / E|S|^2) = m within 2% at 3 off-grid times on 2^15 fresh points of rho_t.

    The default calibration (32 log-spaced times x 32768 stratified points) leaves ~0.3%
    Monte-Carlo error on c(t) (measured over kinds and times); the fresh estimate adds ~0.4%, so
    2% is about 4 standard errors of the difference."""
    m = 0.3
    for kind in kinds:
        f = O.PerturbedScore(O.Perturbation(exacts[data], data, kind, SCHED, seed=1), m)
        for i, t in enumerate(TIMES):
            x, tt = points(data, t, 2**15, 10 + i)
            with torch.no_grad():
                S, e = f.exact.score(x, tt), f.error(x, tt)
            m_hat = math.sqrt(float((e**2).sum(1).mean() / (S**2).sum(1).mean()))
            assert abs(m_hat / m - 1) < 0.02, (kind, t, m_hat)


def test_calibration_interpolates_smoothly():
    """The Hermite spline in log t is exact on a power law c = t^p (linear in log-log)."""
    times = np.geomspace(1e-3, 5.0, 12)
    cal = O.Calibration.from_values(times, times**-0.7)
    t = torch.as_tensor(np.geomspace(1.1e-3, 4.9, 50))
    assert torch.allclose(cal(t), t**-0.7, rtol=1e-12)
    assert torch.allclose(cal(torch.tensor([1e-4, 50.0], dtype=torch.float64)),
                          torch.tensor([1e-3**-0.7, 5.0**-0.7], dtype=torch.float64))


def test_small_run_writes_its_table(tmp_path, monkeypatch, capsys):
    """`zoo oracle` on a tiny budget: every kind, ODE and SDE, a refinement, every file written.

    The CLI builds OracleConfig with its default calibration and diagnostics sizes; a smaller
    one is swapped in so the whole run takes a few seconds."""
    from functools import partial

    from zoo.cli import main

    monkeypatch.setattr(O, "OracleConfig", partial(O.OracleConfig, calib_grid=8,
                                                   calib_points=1024, diag_points=16, diag_loops=2))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["oracle", "--data", "gmm8", "--magnitudes", "0.2,1", "--n", "120", "--seeds", "1",
              "--sde-steps", "40", "--refine", "80", "--repeats", "2", "--out", str(out)])
    assert e.value.code == 0
    stdout = capsys.readouterr().out
    assert stdout.strip().endswith(str(out / "oracle.md")) and "| stein | 1 |" in stdout
    assert {p.name for p in out.iterdir()} == {"oracle.md", "oracle.csv", "oracle.json",
                                              "oracle.png"}
    assert (out / "oracle.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "oracle.md").read_text()
    for kind in O.KINDS:
        assert f"| {kind} |" in md
    assert "80 steps" in md and "## Verdicts" in md
    rows = list(csv.DictReader((out / "oracle.csv").open()))
    # none once + 4 kinds x 2 magnitudes, for ODE and SDE, + 5 refinement rows
    assert len(rows) == 2 * (1 + 4 * 2) + 5
    assert all(r["finite"] == "True" for r in rows)
    assert all(float(r["w2"]) > 0 and float(r["w2_floor"]) > 0 for r in rows)
    stein = [r for r in rows if r["kind"] == "stein"]
    assert all(float(r["stein_rel"]) < 1e-10 for r in stein)
    assert all(float(r["stein_rel"]) > 0.05 for r in rows if r["kind"] in ("divfree", "generic"))


def test_progress_counts_every_step():
    cfg = O.OracleConfig(data="gmm8", kinds=("none", "stein"), magnitudes=(0.5,), n=40, seeds=1,
                         sde_steps=10, refine_steps=(), repeats=2, calib_grid=4, calib_points=256,
                         diag_points=8, diag_loops=2)
    seen = []
    O.run_oracle(cfg, progress=lambda done, total, label: seen.append((done, total)))
    # floors + (none, stein) x (ode, sde) + diagnostics of (none, stein)
    assert [d for d, _ in seen] == list(range(1, 8)) and {t for _, t in seen} == {7}


@pytest.mark.parametrize("args", [["--data", "moons"], ["--magnitudes", "0.1,nan"],
                                  ["--magnitudes", "0.1,-2"], ["--kinds", "stein,curl"],
                                  ["--n", "5"], ["--refine", "x"]])
def test_cli_refuses_bad_input(args, tmp_path, capsys):
    from zoo.cli import main

    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:
        main(["oracle", *args, "--out", str(out), "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error:") and "\n" not in err
    assert not out.exists()


def test_evaluate_samples_accepts_precomputed_floors():
    """floors= skips the real-vs-real draws and changes nothing else (same reference set)."""
    from zoo.evaluate import evaluate_samples
    from zoo.registry import ZooError

    x = O.forward_draw(zoo.get_dataset("gmm8"), SCHED, 0.05, 150, np.random.default_rng(0))
    a = evaluate_samples(x, "gmm8", seed=4, repeats=2)
    floors = {k: (v["floor_mean"], v["floor_std"]) for k, v in a["metrics"].items()}
    b = evaluate_samples(x, "gmm8", seed=4, floors=floors)
    assert a["metrics"] == b["metrics"]
    with pytest.raises(ZooError, match="floors lack"):
        evaluate_samples(x, "gmm8", seed=4, floors={"w2": (0.1, 0.01)})
