"""`zoo leaderboard` on hand-made run directories (well-formed JSON with chosen numbers): rows over
one backend's seeds, paired comparisons with free-mlp and the Summary's rule, learning-curve
plateaus, costs from a bench record, killed sweeps, and byte-for-byte regeneration from the files
git commits. `zoo bench train --out` writes the record the leaderboard reads."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
from conftest import run

from zoo import checkpoint
from zoo.leaderboard import build, collect, read_run, write_leaderboard
from zoo.leaderboard.curves import FieldCurve, plateau, plateau_line, still_moving, trend
from zoo.registry import ZooError

# (data, arch) -> per jax seed: (log rho or None, NLL, MMD). The torch twin of seed s is seed s's
# JAX result plus TWIN (identical training, float rounding apart).
NUMBERS = {
    ("gmm8", "free-mlp"): [(-2.10, 1.90, 0.0015), (-2.20, 1.95, 0.0020)],
    ("gmm8", "energy-mlp"): [(-3.80, 1.93, 0.0290), (-3.70, 1.96, 0.0280)],
    ("moons", "free-mlp"): [(None, 2.00, 0.02560), (None, 2.10, 0.02500)],
    ("moons", "energy-mlp"): [(None, 1.80, 0.02570), (None, 1.90, 0.02511)],
}
TWIN = 1e-3
FLOORS = {  # metric -> (floor mean, floor std), as eval.json gives them
    "gmm8": {"mean_log_density": (-1.743, 0.038), "trimmed_log_density": (-1.743, 0.038),
             "mmd_rbf": (9.4e-4, 1.5e-3),
             "precision": (0.993, 0.002), "recall": (0.989, 0.005), "density": (1.01, 0.012),
             "coverage": (0.97, 0.004), "off_mode": (5e-4, 5e-4), "mode_coverage": (1.0, 0.0),
             "component_kl": (0.0035, 0.0003), "w2": (0.253, 0.045), "sliced_w2": (0.11, 0.02),
             "energy": (0.004, 0.002)},
    "moons": {"mmd_rbf": (7.1e-4, 7.2e-4), "precision": (0.992, 0.002), "recall": (0.99, 0.003),
              "density": (1.004, 0.005), "coverage": (0.968, 0.002), "w2": (0.143, 0.031),
              "sliced_w2": (0.08, 0.01), "energy": (0.003, 0.001)},
}
NLL_SE = {"gmm8": 0.039, "moons": 0.030}
EXACT_NLL = {"gmm8": 1.80}
STEPS = [100, 300, 1000, 3000]
CURVES = {"free-mlp": [-4.0, -2.5, -2.16, -2.15],  # levels off from step 1000 (floor std 0.038)
          "energy-mlp": [-5.0, -4.5, -4.1, -3.75]}  # still moving at the last step


def _metrics(data: str, logp, mmd: float) -> dict:
    vals = {"mmd_rbf": mmd, "precision": 0.99 - 10 * mmd, "recall": 0.99,
            "density": 1.0 - 10 * mmd, "coverage": 0.97 - 5 * mmd, "w2": 0.25 + mmd,
            "sliced_w2": 0.1 + mmd, "energy": mmd / 2}
    if logp is not None:
        vals.update(mean_log_density=logp, trimmed_log_density=logp, off_mode=0.001 + 2 * mmd,
                    mode_coverage=1.0, component_kl=0.003)
    return {k: {"value": v, "floor_mean": FLOORS[data][k][0], "floor_std": FLOORS[data][k][1]}
            for k, v in vals.items()}


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_run(root: Path, data: str, arch: str, backend: str, seed: int, logp, nll: float,
              mmd: float, *, suite: str = "fake", status: str = "complete",
              curve: list | None = None) -> Path:
    """A run directory as a sweep leaves it, with the numbers given."""
    d = root / suite / data / f"{arch}-{backend}-s{seed}"
    ident = {"arch": arch, "backend": backend, "data": data, "seed": seed}
    _write(d / "config.json", {**ident, "status": "complete", "batch": 512, "steps": 3000,
                               "options": {"act": "silu", "depth": 3, "width": 128}})
    _write(d / "sweep.json", {**ident, "suite": suite, "status": status, "commit": "abc1234"})
    if status != "complete":
        return d
    sde = {k: v for k, v in _metrics(data, logp, mmd * 1.1).items()}
    _write(d / "eval.json", {**ident, "settings": {"n": 200, "repeats": 20, "seed": seed},
                             "solvers": {
        "ode-dopri5": {"finite": True, "metrics": _metrics(data, logp, mmd), "nfe": 300,
                       "repeats": 20, "samples_file": "samples-ode-dopri5.npz"},
        "sde-euler": {"finite": True, "metrics": sde, "nfe": 500, "repeats": 20,
                      "samples_file": "samples-sde-euler.npz"}}})
    _write(d / "nll.json", {"nll_nats": nll, "se": NLL_SE[data], "n": 500,
                            **({"exact_nll_nats": EXACT_NLL[data]} if data in EXACT_NLL else {})})
    free = arch.startswith("free")
    _write(d / "check.json", {
        "summary": {"nasym_mean": 1e-3 if free else 2e-15, "circulation_polygon_median": 1e-3,
                    "score_rel_error_mean": 0.3, "stein_residual_sq_mean": 500.0},
        "per_t": [{"t": t, "nasym": 1e-3 if free else 2e-15,
                   "loops": {"polygon": {"normalised": {"median": 1e-3}}}} for t in (0.01, 1.0)]})
    if curve is not None:
        _write(d / "curve.json", {**ident, "settings": {"n": 200, "seed": seed, "solver": "ode",
                                                        "method": "dopri5", "repeats": 20},
                                  "points": [{"step": s, "nfe": 300,
                                              "metrics": _metrics(data, v, mmd)}
                                             for s, v in zip(STEPS, curve)]})
    rng = np.random.default_rng(seed)
    for name in ("samples-ode-dopri5.npz", "samples-sde-euler.npz"):
        np.savez(d / name, samples=rng.standard_normal((200, 2)), nfe=np.int64(300),
                 wall_s=np.float64(1.0), settings=json.dumps({"solver": name}))
    (d / "ema.safetensors").write_bytes(b"not committed")
    return d


def make_runs(root: Path, jax_seeds=(0, 1), torch_seeds=(0,), suite: str = "fake") -> Path:
    for (data, arch), per_seed in NUMBERS.items():
        for seed in jax_seeds:
            logp, nll, mmd = per_seed[seed]
            curve = ([v + 0.01 * seed for v in CURVES[arch]] if data == "gmm8" else None)
            write_run(root, data, arch, "jax", seed, logp, nll, mmd, suite=suite, curve=curve)
        for seed in torch_seeds:
            logp, nll, mmd = per_seed[seed]
            write_run(root, data, arch, "torch", seed, None if logp is None else logp + TWIN,
                      nll + TWIN, mmd + 1e-6, suite=suite)
    return root


BENCH = {
    "kind": "zoo bench train", "date": "2025-01-02 03:04 UTC",
    "settings": {"pattern": "*-mlp", "backends": ["torch", "jax"], "batch": 512, "data": "gmm8",
                 "steps": 20, "rounds": 7, "options": {"width": 128}, "device": "cpu"},
    "machine": {"cpu": "Test CPU 9000", "cpu_count": 2, "torch_threads": 1, "platform": "Linux"},
    "versions": {"python": "3.11.2", "numpy": "2.0", "torch": "2.5", "jax": "0.4"},
    "results": [
        {"field": f, "backend": b, "backbone": "mlp", "ms_per_step": ms, "iqr_ms": 0.5,
         "ratio_to_free": ms / free, "options": {"act": "silu", "depth": 3, "width": 128}}
        for b, free in (("jax", 8.0), ("torch", 20.0))
        for f, ms in (("free-mlp", free), ("energy-mlp", 1.5 * free))],
}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The leaderboard of the fake runs, with figures and a bench record."""
    root = tmp_path_factory.mktemp("a")
    make_runs(root / "runs")
    _write(root / "board" / "bench" / "train-mlp.json", BENCH)
    r = write_leaderboard(root / "runs", root / "board", bench=root / "board/bench/train-mlp.json")
    return root, r


def _committed(src: Path, dst: Path) -> None:
    """Copy what git commits of a runs directory: every JSON file, and the ODE sample files of
    the lowest seed (s0) only."""
    for p in sorted(src.rglob("*")):
        if p.is_file() and (p.suffix == ".json" or (p.name.startswith("samples-ode-")
                                                    and p.parent.name.endswith("-s0"))):
            (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst / p.relative_to(src))


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_committed_files_reproduce_the_leaderboard_byte_for_byte(board, tmp_path):
    root, first = board
    _committed(root / "runs", tmp_path / "runs")
    assert not list((tmp_path / "runs").rglob("*-s1/samples-*"))  # only the lowest seed's
    shutil.copytree(root / "board" / "bench", tmp_path / "board" / "bench")
    again = write_leaderboard(tmp_path / "runs", tmp_path / "board",
                              bench=tmp_path / "board/bench/train-mlp.json")
    for name in ("LEADERBOARD.md", "leaderboard.csv"):
        assert (tmp_path / "board" / name).read_bytes() == (root / "board" / name).read_bytes()
    rel = [p.relative_to(first["out"]).as_posix() for p in first["figures"]]
    assert rel == [p.relative_to(again["out"]).as_posix() for p in again["figures"]]
    assert rel == ["figures/conservativity-gmm8.png", "figures/curves-gmm8.png",
                   "figures/samples-gmm8.png", "figures/conservativity-moons.png",
                   "figures/samples-moons.png", "figures/quality-vs-conservativity.png"]
    md = first["markdown"]
    assert "Figures: [conservativity-gmm8](figures/conservativity-gmm8.png)" in md
    for p in first["figures"]:
        assert p.stat().st_size > 5000, p
    for text in (md, (root / "board" / "leaderboard.csv").read_text()):
        assert str(root) not in text and str(Path.home()) not in text  # no absolute paths
    # a figure left over from before is not listed: the list is what this call drew
    (tmp_path / "board" / "figures" / "samples-rings.png").write_bytes(b"stale")
    again = write_leaderboard(tmp_path / "runs", tmp_path / "board",
                              bench=tmp_path / "board/bench/train-mlp.json")
    assert (tmp_path / "board" / "LEADERBOARD.md").read_bytes() == \
        (root / "board" / "LEADERBOARD.md").read_bytes()


def test_one_row_per_field_the_torch_twin_is_not_another_seed(board):
    _, r = board
    rows = {x.arch: x for x in r["datasets"]["gmm8"].rows}
    assert set(rows) == {"energy-mlp", "free-mlp"}  # not one row per backend
    free = rows["free-mlp"]
    assert (free.backend, free.seeds, free.others) == ("jax", [0, 1], {"torch": [0]})
    assert free.seeds_text == "2 jax + torch s0"
    # mean and std over the two JAX seeds; the torch twin does not enter
    assert free.stats["logp_ode"][0] == pytest.approx(-2.15)
    assert free.stats["logp_ode"][1] == pytest.approx(np.std([-2.10, -2.20], ddof=1))
    assert free.gap == {"mean": pytest.approx(TWIN), "seeds": [0]}  # torch - jax, seed 0
    table = _section(r["markdown"], "gmm8")
    head = next(ln for ln in table.splitlines() if ln.startswith("| field | kind"))
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert cols[:5] == ["field", "kind", "seeds", "trim log ρ ODE", "NLL"]  # the verdict first
    assert cols[-1] == "gap (trim log ρ ODE)" and "W2 ODE" in cols and "ms/step" not in cols
    line = next(ln for ln in table.splitlines() if ln.startswith("| free-mlp | free |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "2 jax + torch s0" and cells[3] == "**-2.150 ± 0.071**"
    assert cells[-1] == "+0.001 (s0)"
    moons = _section(r["markdown"], "moons")
    assert "| field | kind | seeds | MMD ODE | precision | recall | density | coverage | W2 ODE" \
        in moons
    assert "Noise floors (real vs real): MMD ODE 7.10e-04 ± 7.20e-04" in moons
    assert "trim log ρ ODE -1.743 ± 0.038" in table and "NLL 1.800 (exact density) ± 0.039" in table


def test_the_backend_with_most_seeds_gives_the_row_ties_go_to_jax(tmp_path):
    root = tmp_path / "runs"
    for s in (0, 1, 2):
        write_run(root, "moons", "free-mlp", "torch", s, None, 2.0, 0.02 + s / 100)
    write_run(root, "moons", "free-mlp", "jax", 0, None, 2.0, 0.5)
    for s in (0, 1):
        write_run(root, "moons", "energy-mlp", "torch", s, None, 2.0, 0.5)
        write_run(root, "moons", "energy-mlp", "jax", s, None, 2.0, 0.02 + s / 100)
    rows = {x.arch: x for x in build(collect(root)[0])["moons"].rows}
    assert rows["free-mlp"].backend == "torch" and rows["free-mlp"].seeds == [0, 1, 2]
    assert rows["free-mlp"].stats["mmd_ode"][0] == pytest.approx(0.03)
    assert rows["free-mlp"].seeds_text == "3 torch + jax s0"
    assert rows["energy-mlp"].backend == "jax"  # 2 and 2: JAX
    assert rows["energy-mlp"].stats["mmd_ode"][0] == pytest.approx(0.025)


def test_summary_names_a_clear_difference_and_not_one_within_the_floor(board):
    _, r = board
    summary = _section(r["markdown"], "Summary").strip().splitlines()
    called = [ln for ln in summary if " vs free-mlp, " in ln]
    # gmm8 log rho: d = -1.70, -1.50 -> mean -1.60, 95% -1.60 -+ 12.706 * 0.1414 / sqrt 2
    assert called == [
        "- **gmm8**, energy-mlp vs free-mlp, trim log ρ ODE (higher is better): -3.750 ± 0.071 vs "
        "-2.150 ± 0.071, difference -1.600, 95% interval [-2.871, -0.329], 2 jax seeds (s0,1); "
        "beyond the seed spread and 2 floor std (0.076): **energy-mlp worse**."
        # energy-mlp's curve still moves at its last step (free-mlp's levels off): a caveat
        " Not converged: the learning curve of energy-mlp still moves at the end of the budget, "
        "so the difference may be learning speed, not what the field can represent."]
    # gmm8 NLL (d = +0.02, 2 floor std 0.078) and moons MMD (d = +1.05e-4: its interval
    # excludes 0, but 2 floor std is 1.44e-3) are not called
    assert ("- **gmm8**: no difference from free-mlp beyond both the seed spread and 2 floor std "
            "on trim log ρ ODE, NLL for energy-mlp.") not in summary  # energy-mlp is called there
    assert ("- **moons**: no difference from free-mlp beyond both the seed spread and 2 floor "
            "std on MMD ODE for energy-mlp.") in summary
    paired = _section(r["markdown"], "moons")
    line = next(ln for ln in paired.splitlines() if ln.startswith("| energy-mlp | MMD ODE |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[5] == "+1.05e-04" and cells[7] == "1.44e-03" and cells[9] == "no call"
    assert cells[8] == "0 / 2"  # behind free on both seeds (higher MMD), yet within the floor
    lo, hi = (float(x) for x in cells[6].strip("[]").split(","))
    assert 0 < lo < hi  # beyond the seed spread, within the floor
    nll = next(ln for ln in _section(r["markdown"], "gmm8").splitlines()
               if ln.startswith("| energy-mlp | NLL |"))
    assert nll.endswith("| no call |")
    c = {(x.data, x.key): x for x in r["comparisons"] if x.arch == "energy-mlp"}
    assert c[("gmm8", "logpt_ode")].judged["called"] and not c[("gmm8", "nll")].judged["called"]
    assert c[("moons", "mmd_ode")].judged == {"called": False, "beyond_floor": False,
                                              "beyond_seeds": True}


def test_one_seed_says_seed_variance_unknown_and_judges_by_the_floor(tmp_path):
    make_runs(tmp_path / "runs", jax_seeds=(0,), torch_seeds=())
    r = write_leaderboard(tmp_path / "runs", tmp_path / "board", figures=False)
    summary = _section(r["markdown"], "Summary")
    line = next(ln for ln in summary.splitlines() if "energy-mlp vs free-mlp, trim log ρ ODE" in ln)
    assert line == ("- **gmm8**, energy-mlp vs free-mlp, trim log ρ ODE (higher is better): -3.800 vs "
                    "-2.100, difference -1.700, seed variance unknown, 1 jax seed (s0); judged "
                    "against the floor only: |d| > 2 floor std (0.076): **energy-mlp worse**. "
                    "Not converged: the learning curve of energy-mlp still moves at the end of "
                    "the budget, so the difference may be learning speed, not what the field can "
                    "represent.")
    assert ("- **moons**: no difference from free-mlp beyond both the seed spread and 2 floor std "
            "on MMD ODE for energy-mlp (one seed: seed variance unknown, judged against the floor "
            "only).") in summary
    row = r["datasets"]["gmm8"].row("free-mlp")
    assert row.seeds_text == "1 jax" and row.gap is None


def test_plateau_statements_and_rule():
    assert plateau([-4.0, -2.5, -2.16, -2.15], 0.038) == 2
    assert plateau([1.0, 1.0, 1.0], 0.1) == 0
    assert plateau([-5.0, -4.5, -4.1, -3.75], 0.038) == 3  # still moving


def test_trend_is_the_slope_in_log_steps_per_doubling():
    steps = [500, 1000, 2000, 4000, 8000, 12000, 16000, 20000, 25000, 30000]
    # v = 40 - 3 ln(step): exactly -3 ln 2 per doubling, whatever the points' spacing
    assert trend(steps, [40 - 3 * math.log(s) for s in steps]) == pytest.approx(-3 * math.log(2))
    # only the second half counts: an early collapse does not move it
    assert trend(steps, [1e3] * 5 + [7.0] * 5) == pytest.approx(0.0, abs=1e-12)
    # fewer than two points in the second half: the last two (1000 -> 3000 here)
    assert trend([100, 300, 1000, 3000], [-4.0, -2.5, -2.16, -2.15]) == pytest.approx(
        0.01 / math.log2(3))
    assert math.isnan(trend([1000], [1.0])) and math.isnan(trend([1, 2], [1.0, math.nan]))


def test_a_curve_that_drifts_below_the_floor_std_per_point_is_not_converged():
    # free-dit's mean FD on digits (3 seeds, floor std 1.452): each late point falls less than the
    # floor std's reach of the last one, but the second half falls 7.1 per doubling of the budget
    steps = [500, 1000, 2000, 4000, 8000, 12000, 16000, 20000, 25000, 30000]
    fd = [2013.79, 564.18, 219.25, 64.76, 38.14, 29.93, 25.19, 22.24, 19.99, 18.77]
    c = FieldCurve("digits", "free-dit", "jax", [0, 1, 2], steps, {"fd": np.array(fd)},
                   {"fd": np.zeros(len(fd))}, {"fd": (4.262, 1.452)})
    assert plateau(fd, 1.452) == 8  # the last-step rule alone calls it level from 25000
    assert still_moving(c, "fd")
    assert plateau_line(c, "fd", "FD ODE", ".2f") == (
        "- free-dit (3 jax seeds): FD ODE within 1 floor std (1.45) of its final 18.77 from step "
        "25000, but still drifting: at the rate of the curve's second half it moves by -7.11 per "
        "doubling of the budget (more than 1 floor std): not converged.")
    flat = FieldCurve("digits", "free-dit", "jax", [0], steps, {"fd": np.array(fd[:6] + [19.0,
                      18.9, 18.8, 18.77])}, {"fd": np.zeros(len(fd))}, {"fd": (4.262, 1.452)})
    assert not still_moving(flat, "fd")
    assert plateau_line(flat, "fd", "FD ODE", ".2f").startswith(
        "- free-dit (1 jax seed): levels off from step 16000")


def test_learning_curves_in_the_markdown(board):
    _, r = board
    gmm8 = _section(r["markdown"], "gmm8")
    assert "Learning curves ([curves-gmm8](figures/curves-gmm8.png))" in gmm8
    # mean over seeds 0 and 1 (curves offset by 0.01 per seed)
    assert ("- free-mlp (2 jax seeds): levels off from step 1000: trim log ρ ODE stays within 1 floor "
            "std (0.038) of its final -2.145 up to step 3000.") in gmm8
    assert ("- energy-mlp (2 jax seeds): still moving at the last step: trim log ρ ODE -4.095 at step "
            "1000, -3.745 at step 3000 (more than 1 floor std, 0.038): not converged.") in gmm8
    assert "Learning curves" not in _section(r["markdown"], "moons")


def test_header_is_true(board, tmp_path):
    _, r = board
    md = r["markdown"]
    assert "fake: **12 of 12 runs found complete** (the suite's size is not known here)" in md
    assert "mean ± std over 20 real-vs-real draws" in md
    assert "(gmm8)" in md and "Without a closed form (moons)" in md
    assert ("**Cost.** From `train-mlp.json` (`zoo bench train`, 2025-01-02 03:04 UTC): "
            "*-mlp at batch 512 on gmm8, 7 interleaved rounds of 20 steps") in md
    assert "machine Test CPU 9000 (2 logical CPUs, torch threads 1, Linux)" in md
    cost = _section(md, "Cost")
    assert "| field | ms/step jax | ×free jax | ms/step torch | ×free torch |" in cost
    assert "| energy-mlp | 12.00 (0.50) | 1.50 | 30.00 (0.50) | 1.50 |" in cost
    assert "| free-mlp | 8.00 (0.50) | 1.00 | 20.00 (0.50) | 1.00 |" in cost
    assert "Note:" not in md  # the bench timed the runs' settings
    # the suite defined in a file: runs complete of runs defined (torch s1 never ran)
    suite = tmp_path / "s.toml"
    suite.write_text('[fake]\nfields = ["free-mlp", "energy-mlp"]\ndatasets = ["gmm8", "moons"]\n'
                     'seeds = 2\nbackends = ["jax", "torch"]\n')
    root = Path(r["out"]).parent
    again = write_leaderboard(root / "runs", tmp_path / "b", figures=False, suite_file=suite)
    assert "fake: **12 of 16 runs complete** (4 not started)" in again["markdown"]
    # a run made with other settings than the suite's present ones is not counted as done
    sw = tmp_path / "runs2/fake/moons/free-mlp-jax-s1/sweep.json"
    shutil.copytree(root / "runs", tmp_path / "runs2")
    from zoo.sweep import resolve

    spec = next(j.spec for j in resolve("fake", suite_file=suite) if j.label == "moons/free-mlp-jax-s1")
    old = {**spec, "train": {**spec["train"], "steps": 1}}
    sw.write_text(json.dumps({**json.loads(sw.read_text()), "spec": old}))
    again = write_leaderboard(tmp_path / "runs2", tmp_path / "b", figures=False,
                              suite_file=suite)
    assert ("fake: **11 of 16 runs complete** (1 more complete with older settings than the "
            "suite's present ones, 4 not started)") in again["markdown"]
    # and it is kept out of the table (moons' free-mlp row is jax s0 alone now), listed with
    # what changed
    moons = {r.arch: r for r in again["datasets"]["moons"].rows}
    assert moons["free-mlp"].seeds == [0] and moons["energy-mlp"].seeds == [0, 1]
    assert ("- free-mlp [jax] seed 1: stale — made with other settings than the suite's present "
            "ones: train.steps 1 (now 3000)") in _section(again["markdown"], "moons")


def test_killed_sweep_is_shown_as_killed(tmp_path, monkeypatch):
    d = write_run(tmp_path, "gmm8", "free-mlp", "jax", 0, -2.0, 1.9, 0.001, status="running")
    monkeypatch.setattr(checkpoint, "is_locked", lambda run_dir, name=".lock": False,
                        raising=False)
    assert read_run(d).status == "killed"
    monkeypatch.setattr(checkpoint, "is_locked", lambda run_dir, name=".lock": True)
    assert read_run(d).status == "running"
    monkeypatch.delattr(checkpoint, "is_locked")  # before zoo.checkpoint has it
    assert read_run(d).status == "running"


def test_non_finite_samples_are_shown_not_averaged(tmp_path):
    make_runs(tmp_path / "runs", jax_seeds=(0,), torch_seeds=())
    ev = tmp_path / "runs/fake/gmm8/energy-mlp-jax-s0/eval.json"
    e = json.loads(ev.read_text())
    e["solvers"]["ode-dopri5"].update(finite=False, metrics=dict.fromkeys(
        e["solvers"]["ode-dopri5"]["metrics"]))
    ev.write_text(json.dumps(e))
    r = write_leaderboard(tmp_path / "runs", tmp_path / "board", figures=False)
    assert not r["skipped"]
    row = r["datasets"]["gmm8"].row("energy-mlp")
    assert math.isinf(row.stats["logpt_ode"][0])
    assert "| energy-mlp | conservative | 1 jax | non-finite |" in r["markdown"]
    assert not [c for c in r["comparisons"] if c.arch == "energy-mlp" and c.key == "logpt_ode"]


def test_a_diverged_nll_is_no_value_and_the_run_stays_complete(tmp_path):
    make_runs(tmp_path / "runs", jax_seeds=(0,), torch_seeds=())
    _write(tmp_path / "runs/fake/gmm8/energy-mlp-jax-s0/nll.json", {
        "nll_nats": None, "se": None, "bits_per_dim": None, "n": 500, "nfe": 2000,
        "diverged": {"t_reached": 3.1, "x_max": 2.4e3, "reason": "gave up"}})
    r = write_leaderboard(tmp_path / "runs", tmp_path / "board", figures=False)
    assert not r["skipped"]
    row = r["datasets"]["gmm8"].row("energy-mlp")
    assert "nll" not in row.stats and "logpt_ode" in row.stats
    assert r["datasets"]["gmm8"].row("free-mlp").stats["nll"]
    assert not [c for c in r["comparisons"] if c.arch == "energy-mlp" and c.key == "nll"]


def test_peak_rss_sees_a_step_s_activations():
    """peak_rss measures a fresh process: free-mlp at width 1024 on a batch of 32768 holds
    activations of 32768 x 1024 float32 (128 MiB) per layer and their gradients, a batch of 8
    almost nothing, on top of the same libraries and the same weights."""
    from zoo.bench import peak_rss

    small = peak_rss("free-mlp", "torch", data="gmm8", batch=8,
                     options={"width": 1024, "depth": 2}, steps=1)
    big = peak_rss("free-mlp", "torch", data="gmm8", batch=32768,
                   options={"width": 1024, "depth": 2}, steps=1)
    assert small["peak_mib"] >= small["built_mib"] > 50
    assert small["peak_mib"] - small["built_mib"] < 64
    assert big["peak_mib"] - big["built_mib"] > 256, big
    assert abs(big["built_mib"] - small["built_mib"]) < 64  # the same process up to the step


def test_bench_memory_record(tmp_path, capsys):
    """`zoo bench memory` measures each field in its own process: a parent holding a large
    array does not show up in the children's numbers (ru_maxrss would inherit it)."""
    from zoo.bench.common import hwm_mib

    hold = np.ones(2**30 // 8)  # 1 GiB resident in this process
    rec = tmp_path / "memory.json"
    code, out, err = run(["bench", "memory", "--pattern", "free-mlp", "--backends", "torch",
                          "--batch", "16", "--steps", "1", "--opt", "width=8", "--out",
                          str(rec)], capsys)
    assert code == 0, err
    r = json.loads(rec.read_text())
    assert r["kind"] == "zoo bench memory" and r["settings"]["steps"] == 1
    by = {x["field"]: x for x in r["results"]}
    assert set(by) == {"free-mlp"}
    assert by["free-mlp"]["ratio_to_free"] == 1.0 and by["free-mlp"]["options"]["width"] == 8
    parent = hwm_mib()  # > 1 GiB; a child that inherited it would report at least as much
    for x in by.values():
        assert 0 < x["built_mib"] <= x["peak_mib"] < parent - 512, (x, parent)
    assert hold.sum() == 2**27  # held until here


def test_bench_record_feeds_the_cost_table(tmp_path, capsys):
    rec = tmp_path / "bench" / "train.json"
    code, out, err = run(["bench", "train", "--pattern", "[ef]*-mlp", "--backends", "torch",
                          "--batch", "16", "--steps", "2", "--rounds", "3", "--opt", "width=8",
                          "--opt", "depth=1", "--compile", "off", "--out", str(rec)], capsys)
    assert code == 0, err
    r = json.loads(rec.read_text())
    assert r["settings"] == {"pattern": "[ef]*-mlp", "backends": ["torch"], "batch": 16,
                             "data": "gmm8", "steps": 2, "rounds": 3, "device": "cpu",
                             "options": {"width": 8, "depth": 1}, "compile": "off",
                             "interleaved": True}
    assert set(r["machine"]) == {"cpu", "cpu_count", "torch_threads", "platform"}
    assert {"python", "numpy", "torch", "jax", "jaxlib", "equinox", "optax"} <= set(r["versions"])
    by = {x["field"]: x for x in r["results"]}
    assert "free-mlp" in by and "energy-mlp" in by and r["date"]
    assert by["free-mlp"]["ratio_to_free"] == 1.0
    per_round = [e / f for e, f in zip(by["energy-mlp"]["ms_per_round"],
                                        by["free-mlp"]["ms_per_round"])]
    assert by["energy-mlp"]["ratio_to_free"] == pytest.approx(statistics.median(per_round))
    assert len(by["free-mlp"]["ms_per_round"]) == 3 and by["free-mlp"]["iqr_ms"] >= 0
    assert by["free-mlp"]["options"]["width"] == 8
    make_runs(tmp_path / "runs", jax_seeds=(0,), torch_seeds=(0,))
    code, _, err = run(["leaderboard", "--runs", str(tmp_path / "runs"), "--out",
                        str(tmp_path / "board"), "--bench", str(rec), "--no-figures",
                        "--quiet"], capsys)
    assert code == 0, err
    md = (tmp_path / "board" / "LEADERBOARD.md").read_text()
    assert "**Cost.** From `train.json`" in md and "batch 16 on gmm8" in md
    assert "| free-mlp | – | – | " not in md and "| free-mlp | " in _section(md, "Cost")
    # the runs were trained at width 128 and batch 512: the header says the bench differs
    assert "Note: the bench's settings differ from the runs': " in md
    assert "free-mlp ran with depth=3, width=128, batch 512 (bench: depth=1, width=8, batch 16)" in md
    code, _, _ = run(["leaderboard", "--runs", str(tmp_path / "runs"), "--out",
                      str(tmp_path / "board"), "--bench", "none", "--no-figures", "--quiet"],
                     capsys)
    md = (tmp_path / "board" / "LEADERBOARD.md").read_text()
    assert code == 0 and "## Cost" not in md and "No bench record given" in md


def test_bad_leaderboard_and_bench_input_is_one_line(tmp_path, capsys):
    make_runs(tmp_path / "runs", jax_seeds=(0,), torch_seeds=())
    bad = tmp_path / "bad.json"
    bad.write_text('{"settings": {}}')
    notjson = tmp_path / "notjson.json"
    notjson.write_text("{")
    lb = ["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"),
          "--quiet"]
    for args in (lb + ["--bench", str(tmp_path / "missing.json")], lb + ["--bench", str(bad)],
                 lb + ["--bench", str(notjson)],
                 ["bench", "train", "--opt", "nope=1", "--backends", "torch"],
                 ["bench", "train", "--out", str(tmp_path)]):
        code, _, err = run(args, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written when the bench record is bad


def _image_run(root: Path, arch: str, seed: int, fd: float, memo: float,
               data: str = "digits") -> None:
    """A digits run as the images suite leaves it: the classifier's metrics, dequantised NLL,
    every loop family in check.json. data="latent-digits": a latent run, measured decoded (its
    eval.json names the pixel set; its NLL is of latents, with no bits/dim)."""
    latent = data.startswith("latent-")
    d = root / "images" / data / f"{arch}-torch-s{seed}"
    ident = {"arch": arch, "backend": "torch", "data": data, "seed": seed}
    _write(d / "config.json", {**ident, "status": "complete", "batch": 64, "steps": 6000,
                               "options": {"channels": 16}})
    _write(d / "sweep.json", {**ident, "suite": "images", "status": "complete", "commit": "abc"})
    floors = {"fd": (6.4, 1.5), "class_kl": (0.011, 0.005), "class_entropy": (2.29, 0.004),
              "feat_precision": (0.97, 0.009), "feat_recall": (0.97, 0.015),
              "feat_density": (1.0, 0.03), "feat_coverage": (0.97, 0.01),
              "memorised": (0.05, 0.018), "nn_train_dist": (2.1, 0.03)}
    vals = {"fd": fd, "class_kl": 0.02, "class_entropy": 2.28, "feat_precision": 0.9,
            "feat_recall": 0.9, "feat_density": 0.9, "feat_coverage": 0.9, "memorised": memo,
            "nn_train_dist": 1.9}
    m = {k: {"value": v, "floor_mean": floors[k][0], "floor_std": floors[k][1]}
         for k, v in vals.items()}
    px = {"pixel_data": "digits", "latent_dim": 16} if latent else {}
    _write(d / "eval.json", {**ident, "settings": {"n": 500, "repeats": 20}, "solvers": {
        "ode-dopri5": {"finite": True, "metrics": m, "nfe": 200, "repeats": 20, **px},
        "sde-euler": {"finite": True, "metrics": m, "nfe": 500, "repeats": 20, **px}}})
    _write(d / "nll.json", {"nll_nats": 20.0, "se": 0.5, "n": 300} if latent else
           {"nll_nats": -100.0, "se": 1.0, "n": 300, "bits_per_dim": 0.8,
            "dequantisation": {"levels": 17, "bin_width": 0.125}})
    fams = ("polygon", "triangle", "projected", "interpolated", "interpolated-projected")
    _write(d / "check.json", {
        "summary": {"nasym_mean": 0.1, **{f"circulation_{f}_median": 0.01 * (i + 1)
                                          for i, f in enumerate(fams)}},
        "per_t": [{"t": 0.1, "nasym": 0.1, "loops": {"polygon": {"normalised": {"median": 0.01}}}}]})


def test_image_datasets_get_the_classifier_columns_and_fd_verdict(tmp_path):
    """digits: FD ODE and memorisation carry the verdict (FD cannot see copies), every loop
    family is a column, and a field 10 FD floor std worse than free over 3 seeds, copying
    training images 6x as often, is called on both."""
    root = tmp_path / "runs"
    for s in range(3):
        _image_run(root, "free-unet", s, fd=8.0 + 0.1 * s, memo=0.05)
        _image_run(root, "energysq-unet", s, fd=24.0 + 0.2 * s, memo=0.30)
    r = write_leaderboard(root / "images", tmp_path / "out", figures=False)
    ds = r["datasets"]["digits"]
    assert ds.image and not ds.closed and ds.verdict == ("fd_ode", "memo_ode")
    md = _section(r["markdown"], "digits")
    assert "Verdict: FD ODE and memorised." in md
    for title in ("FD ODE", "FD SDE", "memorised", "bits/dim", "circ interp", "circ interp-proj",
                  "KL class"):
        assert f"| {title} |" in md, title
    assert ds.row("energysq-unet").stats["circ_iproj"][0] == pytest.approx(0.05)
    assert ds.row("free-unet").stats["bpd"][0] == pytest.approx(0.8)
    called = [c for c in r["comparisons"] if c.judged["called"]]
    assert [(c.arch, c.key) for c in called] == [("energysq-unet", "fd_ode"),
                                                 ("energysq-unet", "memo_ode")]
    summary = _section(r["markdown"], "Summary")
    assert "energysq-unet" in summary
    # energysq-unet copies (memorised 0.30 against a floor of 0.05 +- 0.018): said in words,
    # since FD cannot see copying; free-unet (0.05) is not named
    memo = next(line for line in summary.splitlines() if "memorisation" in line)
    assert "0.300 ± 0.000 for energysq-unet (3 torch seeds)" in memo and "free-unet" not in memo
    csv_head = (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()[0]
    assert ",fd_ode_mean," in csv_head and ",logpt_ode_mean," not in csv_head


def test_fd_is_paired_as_a_ratio_so_runaway_seeds_are_called(tmp_path):
    """energy-unet's 3 digits seeds (FD 64086, 6087, 33155 against free-unet's 6.69, 9.19, 5.46:
    a few runaway samples each) are worse on every seed by 3-4 orders of magnitude; the raw
    differences' t-interval spans 0, the ratio's does not, so the leaderboard calls it, shows the
    ratio and its interval, and writes them to the CSV. A field within a few percent of free on
    every seed is not called."""
    root = tmp_path / "runs"
    for s, (fr, en, sq) in enumerate([(6.69, 64086.0, 7.40), (9.19, 6087.0, 4.98),
                                      (5.46, 33155.0, 6.85)]):
        _image_run(root, "free-unet", s, fd=fr, memo=0.05)
        _image_run(root, "energy-unet", s, fd=en, memo=0.05)
        _image_run(root, "energysq-unet", s, fd=sq, memo=0.05)
    r = write_leaderboard(root / "images", tmp_path / "out", figures=False)
    by = {(c.arch, c.key): c for c in r["comparisons"]}
    en, sq = by[("energy-unet", "fd_ode")], by[("energysq-unet", "fd_ode")]
    assert en.diff["lo"] < 0 < en.diff["hi"]  # the raw interval cannot call it
    assert en.judged["called"] and not en.better
    assert math.exp(en.ratio["mean"]) == pytest.approx(
        (64086 / 6.69 * 6087 / 9.19 * 33155 / 5.46) ** (1 / 3))
    assert not sq.judged["called"] and sq.ratio["lo"] < 0 < sq.ratio["hi"]
    summary = _section(r["markdown"], "Summary")
    line = next(x for x in summary.splitlines() if "energy-unet vs free-unet, FD ODE" in x)
    assert "field / free ×3.38e+03 (geometric mean over seeds), 95% interval [×" in line
    assert line.endswith("**energy-unet worse**.")
    assert "| ratio ×3.38e+03 [×" in _section(r["markdown"], "digits")
    cells = [c.strip() for c in next(
        x for x in _section(r["markdown"], "digits").splitlines()
        if x.startswith("| energy-unet | FD ODE |")).strip("|").split("|")]
    assert cells[8:] == ["0 / 3", "**worse**"]  # worse on every seed
    sq_cells = next(x for x in _section(r["markdown"], "digits").splitlines()
                    if x.startswith("| energysq-unet | FD ODE |"))
    assert "| 1 / 2 | no call |" in sq_cells  # 7.40 > 6.69, 4.98 < 9.19, 6.85 > 5.46
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text())))
    row = next(x for x in rows if x["field"] == "energy-unet")
    assert float(row["vs_free_fd_ode_ratio"]) == pytest.approx(3.38e3, rel=1e-2)
    assert row["vs_free_fd_ode_called"] == "worse" and "vs_free_memo_ode_ratio" not in row


def test_latent_rows_stand_in_the_digits_section(tmp_path):
    """latent-digits runs (their samples measured decoded) get rows in the digits table, marked
    (latent), under the same columns and floors; no section of their own; paired with
    free-mlp on the latents, not with the pixel fields."""
    root = tmp_path / "runs"
    for s in range(3):
        _image_run(root, "free-unet", s, fd=8.0 + 0.1 * s, memo=0.05)
        _image_run(root, "free-mlp", s, fd=12.0 + 0.1 * s, memo=0.02, data="latent-digits")
        _image_run(root, "energysq-mlp", s, fd=30.0 + 0.3 * s, memo=0.02, data="latent-digits")
    r = write_leaderboard(root / "images", tmp_path / "out", figures=False)
    lat = r["datasets"]["latent-digits"]
    assert lat.image and lat.pixel == "digits" and lat.verdict == ("fd_ode", "memo_ode")
    md = r["markdown"]
    assert "\n## latent-digits\n" not in md
    sec = _section(md, "digits")
    rows = [line.split(" | ")[0].lstrip("| ") for line in sec.splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert rows[:3] == ["free-unet", "energysq-mlp (latent)", "free-mlp (latent)"]
    assert "| 12.10 ± 0.10 |" in sec and "rows marked (latent)" in sec
    head = next(line for line in sec.splitlines() if line.startswith("| field"))
    assert "| bits/dim |" in head  # the pixel rows have it; the latent rows show –
    assert lat.row("free-mlp").stats.get("bpd") is None
    called = [(c.data, c.arch, c.ref) for c in r["comparisons"] if c.judged["called"]]
    assert called == [("latent-digits", "energysq-mlp", "free-mlp")]  # FD; memorised: equal
    summary = _section(md, "Summary")
    assert ("no difference from free-mlp beyond both the seed spread and 2 floor std on "
            "memorised for energysq-mlp.") in summary


def test_several_bench_records_and_the_flop_floor_column(tmp_path):
    """--bench A,B: one record per backbone (each with its own options and batch) feeds one
    cost table; a record with FLOP ratios adds the FLOP ×free column; a field timed by two
    records is refused with one line."""
    from zoo.leaderboard import read_bench

    a = {**BENCH, "results": [{**r, "flop_ratio_to_free": 1.0 if r["field"] == "free-mlp"
                               else 2.0} for r in BENCH["results"]]}
    b = {**BENCH, "settings": {**BENCH["settings"], "pattern": "*-unet", "batch": 64,
                               "data": "digits"},
         "results": [{"field": f, "backend": "torch", "backbone": "unet", "ms_per_step": ms,
                      "iqr_ms": 1.0, "ratio_to_free": ms / 30.0, "options": {"channels": 16}}
                     for f, ms in (("free-unet", 30.0), ("energysq-unet", 75.0))]}
    _write(tmp_path / "a.json", a)
    _write(tmp_path / "b.json", b)
    make_runs(tmp_path / "runs", jax_seeds=(0,), torch_seeds=(0,))
    r = write_leaderboard(tmp_path / "runs", tmp_path / "board", figures=False,
                          bench=f"{tmp_path / 'a.json'},{tmp_path / 'b.json'}")
    cost = _section(r["markdown"], "Cost")
    assert "| field | ms/step jax | ×free jax | FLOP ×free jax | ms/step torch |" in cost
    assert "| energy-mlp | 12.00 (0.50) | 1.50 | 2.00 | 30.00 (0.50) | 1.50 | 2.00 |" in cost
    assert "| energysq-unet | – | – | – | 75.00 (1.00) | 2.50 | – |" in cost
    # a record with paired per-round ratios shows their quartiles beside the median
    b["results"][1]["ratio_iqr"] = [2.25, 2.75]
    _write(tmp_path / "b.json", b)
    r = write_leaderboard(tmp_path / "runs", tmp_path / "board", figures=False,
                          bench=f"{tmp_path / 'a.json'},{tmp_path / 'b.json'}")
    assert "| energysq-unet | – | – | – | 75.00 (1.00) | 2.50 [2.25-2.75] | – |" in _section(
        r["markdown"], "Cost")
    assert "*-unet at batch 64 on digits" in r["markdown"]
    with pytest.raises(ZooError, match="again"):
        read_bench([tmp_path / "a.json", tmp_path / "a.json"], tmp_path)


def test_quiet_fields_are_named_beside_their_own_free_field():
    """digits pairs *-unet with free-unet and *-dit with free-dit: a field that differs from
    neither is listed against its own backbone's free field (a dataset-wide line once named the
    first comparison's reference for every field)."""
    from types import SimpleNamespace

    from zoo.leaderboard.summary import Comparison, summary_lines

    def comp(arch, ref):
        return Comparison(data="digits", arch=arch, ref=ref, key="fd_ode", backend="torch",
                          seeds=[0], a=(7.0, 0.0), b=(6.7, 0.0), diff={"mean": 0.3},
                          floor_std=1.45, judged={"called": False})

    ds = SimpleNamespace(name="digits", verdict=["fd_ode"], rows=[], floors={})
    lines = summary_lines({"digits": ds}, [comp("energysq-dit", "free-dit"),
                                           comp("stein-unet", "free-unet"),
                                           comp("energysq-unet", "free-unet")])
    one = " (one seed: seed variance unknown, judged against the floor only)."
    assert lines == [
        "- **digits**: no difference from free-dit beyond both the seed spread and 2 floor std on "
        "FD ODE for energysq-dit" + one,
        "- **digits**: no difference from free-unet beyond both the seed spread and 2 floor std "
        "on FD ODE for energysq-unet, stein-unet" + one]


def test_summary_names_runaway_and_memorising_fields():
    """A field whose few runaway samples blow FD up is named by its off-range share (floor
    0 ± 0: any share above 0); a field copying training images is named by its memorised share
    above floor + 2 std; fields at their floors are not."""
    from types import SimpleNamespace

    from zoo.leaderboard.summary import Comparison, summary_lines

    def row(arch, off, memo, seeds=(0, 1, 2)):
        return SimpleNamespace(arch=arch, seeds=list(seeds), backend="jax",
                               stats={"offrange_ode": off, "memo_ode": memo})

    ds = SimpleNamespace(name="digits", verdict=["fd_ode"], floors={
        "offrange_ode": (0.0, 0.0), "memo_ode": (0.053, 0.013)},
        rows=[row("free-unet", (0.0, 0.0), (0.012, 0.004)),
              row("energy-unet", (0.046, 0.026), (0.020, 0.01)),
              row("free-mlp", (0.0, 0.0), (0.150, 0.02), seeds=(0,))])
    # FD: 34563 ± 30000 against 7.1 ± 1.9 over 3 seeds, an interval that spans zero: no call
    comps = [Comparison(data="digits", arch="energy-unet", ref="free-unet", key="fd_ode",
                        backend="jax", seeds=[0, 1, 2], a=(34563.0, 30000.0), b=(7.1, 1.9),
                        diff={"mean": 34556.0}, floor_std=1.45, judged={"called": False})]
    lines = summary_lines({"digits": ds}, comps)
    assert lines[0].startswith("- **digits**: no difference from free-unet") and lines[0].endswith(
        "on FD ODE for energy-unet.")
    assert lines[1].startswith("- **digits**: runaway samples") and lines[1].endswith(
        "is 0.046 ± 0.026 for energy-unet (3 jax seeds), against a floor of 0.000 ± 0.000: "
        "more than 2 floor std above it.")
    assert "free-unet" not in lines[1] and "free-mlp" not in lines[1]
    assert lines[2].startswith("- **digits**: memorisation") and "0.150 for free-mlp (1 jax " \
        "seed)" in lines[2] and "energy-unet" not in lines[2] and len(lines) == 3
    # no spread on a nonzero floor: nothing to judge by, no line
    ds.floors["memo_ode"] = (0.053, 0.0)
    assert len(summary_lines({"digits": ds}, comps)) == 2


def test_suite_records_leave_out_compile_comparisons(tmp_path):
    """`zoo leaderboard --suite S` reads results/bench/S-*.json for its cost columns; a
    `--compile both` record there (each torch field timed eager and compiled) is a comparison,
    not a run's cost, so it is left out instead of refused; an unreadable one stays, to be
    reported when read."""
    from zoo.leaderboard.cost import suite_records
    _write(tmp_path / "images-unet.json", BENCH)
    _write(tmp_path / "images-unet-compile.json",
           {**BENCH, "settings": {**BENCH["settings"], "compile": "both"}})
    (tmp_path / "images-bad.json").write_text("{")
    _write(tmp_path / "standard-mlp.json", BENCH)
    assert [p.name for p in suite_records(tmp_path, "images")] == ["images-bad.json",
                                                                   "images-unet.json"]
    assert [p.name for p in suite_records(tmp_path, "quick")] == []


def test_curve_panels_draw_each_datasets_verdict_metrics():
    """The learning-curve figure draws what carries the verdict: FD and memorised on digits,
    log rho and FD on digits-gmm, log rho and MMD on mixtures, MMD and precision on points."""
    from zoo.leaderboard.figures import _linthresh, _wide, curve_panels
    from zoo.leaderboard.tables import Dataset

    def names(closed, image):
        return [n for n, _ in curve_panels(Dataset("d", closed, [], {}, [], image=image))]

    assert names(False, True) == ["fd", "memorised"]
    assert names(True, True) == ["trimmed_log_density", "fd"]
    assert names(True, False) == ["trimmed_log_density", "mmd_rbf"]
    assert names(False, False) == ["mmd_rbf", "precision"]
    # a log axis only where values span > 30x and none is 0
    assert _wide([1e4, 20.0]) and _wide([-2000.0, 18.0])
    assert not _wide([-3.8, -1.7]) and not _wide([0.0, 0.01, 0.3])
    assert not _wide([0.05, 1e-4, -5e-4])  # MMD near its floor: linear
    # a symlog axis is linear out to the floor's far edge, so late points near it are resolved
    assert _linthresh((18.474, 0.325)) == pytest.approx(18.799)
    assert _linthresh((-2.217, 0.007)) == pytest.approx(2.224)
    assert _linthresh(None) == 1.0 and _linthresh((0.2, 0.1)) == 1.0
