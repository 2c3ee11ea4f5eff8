"""Sample-quality metrics against closed forms, and the evaluation of samples and runs.

Every seed is fixed, so each assertion is deterministic; the tolerances are chosen so that they
would also hold for other seeds with high probability (reasons at each test).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import zoo
from zoo import metrics as M
from zoo.data import GaussianMixture
from zoo.evaluate import eval_run, evaluate_samples, format_table
from zoo.registry import ZooError

SCHED = zoo.make_schedule("ou")
GMM8 = zoo.get_dataset("gmm8")
MU = np.array([1.2, -0.9])  # |MU| = 1.5


def gauss(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, 2))


def at_tmin(mix: GaussianMixture, rng: np.random.Generator, n: int) -> np.ndarray:
    """rho_{t_min} draws of a mixture: what the samplers target."""
    a, s = SCHED.alpha(SCHED.t_min), SCHED.sigma(SCHED.t_min)
    return a * mix.sample(rng, n) + s * rng.standard_normal((n, mix.means.shape[1]))


def test_w2_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).standard_normal((400, 3))
    assert M.w2(x, x) == pytest.approx(0.0, abs=1e-12)
    assert M.w2(x, x + 1.0) == pytest.approx(math.sqrt(3.0), rel=1e-9)  # a translation moves all


def test_w2_gaussian_shift():
    """W2(N(0, I), N(mu, I)) = |mu|. For empirical sets W2^2 = |mean gap|^2 + W2^2 of the centred
    sets, so |W2 - |mu|| <= |mean gap - mu| + W2(centred): the first is ~ 2/sqrt(n) = 0.045
    (inside 10% of |mu| = 0.15), the second is the same-distribution floor (~0.15 at n = 2000)."""
    n = 2000
    fm, fs = M.noise_floor(M.w2, gauss, n, repeats=3, rng=1)
    g = np.random.default_rng(2)
    v = M.w2(gauss(g, n), gauss(g, n) + MU)
    assert abs(v - 1.5) <= 0.1 * 1.5 + fm + 3 * fs, (v, fm, fs)
    assert 0.05 < fm < 0.3  # the empirical-W2 floor in 2-D: small but far from 0 at n = 2000


def test_sliced_w2_gaussian_shift():
    """SW2 of a pure shift is |mu| / sqrt(d) (E (theta . mu)^2 = |mu|^2 / d); 200 projections
    estimate E cos^2 to ~5%, so sqrt to ~2.5%: inside 10% + floor."""
    n = 2000
    fm, fs = M.noise_floor(M.sliced_w2, gauss, n, repeats=5, rng=1)
    g = np.random.default_rng(2)
    v = M.sliced_w2(gauss(g, n), gauss(g, n) + MU)
    want = 1.5 / math.sqrt(2)
    assert abs(v - want) <= 0.1 * want + fm + 3 * fs, (v, want, fm, fs)


@pytest.mark.parametrize("metric", [M.mmd_rbf, M.energy_distance], ids=["mmd", "energy"])
def test_two_sample_statistics_see_shifts_and_not_noise(metric):
    n = 1000
    fm, fs = M.noise_floor(metric, gauss, n, repeats=5, rng=1)
    level = fm + 3 * fs  # "the floor": what two real draws reach at the 3-sigma level
    g = np.random.default_rng(2)
    same = metric(gauss(g, n), gauss(g, n))
    assert same <= fm + 4 * fs, (same, fm, fs)
    shifted = [metric(gauss(g, n), gauss(g, n) + [s, 0.0]) for s in (0.5, 1.0, 2.0)]
    assert all(v > 5 * level for v in shifted), (shifted, level)
    assert shifted[0] < shifted[1] < shifted[2], shifted


def test_mmd_is_unbiased():
    """The mean of unbiased MMD^2 over same-distribution draws is 0 (V-statistics sit above)."""
    vals = [M.mmd_rbf(gauss(np.random.default_rng([5, i]), 200), gauss(np.random.default_rng([6, i]), 200))
            for i in range(30)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / math.sqrt(len(vals)), vals


def test_prdc_of_identical_sets():
    x = np.random.default_rng(0).standard_normal((500, 2))
    r = M.prdc(x, x, k=5)
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["coverage"] == 1.0
    assert set(r) == {"precision", "recall", "density", "coverage"}
    assert all(isinstance(v, float) for v in r.values())


def test_mode_coverage_and_component_kl():
    w = np.full(8, 1 / 8)
    missing = np.array([100, 100, 100, 0, 100, 100, 100, 100])
    assert M.mode_coverage(missing, w) == 7 / 8
    assert M.component_kl(missing, w) == pytest.approx(math.log(8 / 7), rel=1e-9)  # closed form
    perfect = np.full(8, 100)
    assert M.mode_coverage(perfect, w) == 1.0
    assert M.component_kl(perfect, w) == pytest.approx(0.0, abs=1e-12)
    # a handful of stray points (5% of the expected count) do not cover a mode
    stray = np.array([105, 105, 105, 5, 105, 105, 105, 105])
    assert M.mode_coverage(stray, w) == 7 / 8
    assert M.mode_coverage(stray, w, min_share=0.01) == 1.0
    assert math.isfinite(M.component_kl(np.array([800, 0, 0, 0, 0, 0, 0, 0]), w))


def test_noise_floor_sizes_and_dicts():
    def sizes(x, y):
        return {"nx": float(len(x)), "ny": float(len(y))}

    r = M.noise_floor(sizes, gauss, (3, 5), repeats=2)
    assert r == {"nx": (3.0, 0.0), "ny": (5.0, 0.0)}
    m, s = M.noise_floor(lambda x, y: float(x.mean() - y.mean()), gauss, 50, repeats=4, rng=0)
    assert s > 0 and abs(m) < 4 * s


def test_evaluate_samples_on_real_data_sits_on_the_floor():
    """Fresh rho_{t_min} draws are as good as samples get: every metric within 4.5 floor std of
    the floor mean. With r = 10 repeats, (value - mean) / std ~ sqrt(1 + 1/r) t_{r-1}, so 4.5
    std is a false alarm of ~0.2% per metric."""
    x = at_tmin(GMM8.exact, np.random.default_rng([9, 0]), 1000)
    r = evaluate_samples(x, "gmm8", schedule=SCHED, repeats=10)
    assert r["finite"] and r["n_nonfinite"] == 0 and r["n"] == r["n_ref"] == 1000
    want = {"w2", "sliced_w2", "mmd_rbf", "energy", "precision", "recall", "density", "coverage",
            "mean_log_density", "trimmed_log_density", "mode_coverage", "off_mode",
            "component_kl"}
    assert set(r["metrics"]) == want
    for k, v in r["metrics"].items():
        assert abs(v["value"] - v["floor_mean"]) <= 4.5 * v["floor_std"] + 1e-12, (k, v)
    assert r["metrics"]["mode_coverage"]["value"] == 1.0
    assert r["metrics"]["off_mode"]["value"] < 0.005  # 1 - q = 0.001 expected
    json.dumps(r)  # plain floats all the way down


def test_trimmed_log_density_drops_the_lowest_half_percent():
    """2000 values 0..1999: the lowest 10 go, the mean of 10..1999 is 1004.5; with 150 values
    int(0.005 * 150) = 0 go and the statistic is the plain mean."""
    assert M.trimmed_log_density(np.arange(2000.0)[::-1]) == 1004.5
    assert M.trimmed_log_density(np.arange(150.0)) == 74.5


def test_one_runaway_sample_moves_the_mean_not_the_trimmed_mean():
    """The energy-mlp seed-2 case: one sample in 2000 at |x| = 15.7 on gmm8. The mean log rho
    falls by ~1 nat per 2000 samples and 1000 nats of log rho; the trimmed mean stays within
    its floor of the real data's, and the off-mode share counts the runaway."""
    x = at_tmin(GMM8.exact, np.random.default_rng([9, 1]), 2000)
    clean = evaluate_samples(x, "gmm8", schedule=SCHED, repeats=3)["metrics"]
    x[0] = [15.7, 0.0]
    bad = evaluate_samples(x, "gmm8", schedule=SCHED, repeats=3)["metrics"]
    assert bad["mean_log_density"]["value"] < clean["mean_log_density"]["value"] - 1.0
    t = bad["trimmed_log_density"]
    # the runaway replaced a typical sample, so the trimmed set lost one and kept one more low
    # value: a shift of order (typical - 10th lowest) / 1990, a few 1e-3, under a floor std
    assert abs(t["value"] - clean["trimmed_log_density"]["value"]) < 0.01 < t["floor_std"]
    assert t["value"] > t["floor_mean"] - 3 * t["floor_std"], t
    assert bad["off_mode"]["value"] >= clean["off_mode"]["value"] + 1 / 2000


def test_evaluate_samples_sees_dropped_modes():
    """Samples from 4 of the 8 modes: half the mass must travel one mode gap (1.53), so
    W2 ~ sqrt(0.5) 1.53 ~ 1.1, against a floor of ~0.3 at n = 1000."""
    m = GMM8.exact
    half = GaussianMixture(m.means[::2], m.stds[::2], np.full(4, 0.25))
    x = at_tmin(half, np.random.default_rng(0), 1000)
    r = evaluate_samples(x, "gmm8", schedule=SCHED, repeats=3)["metrics"]
    assert r["mode_coverage"]["value"] == 0.5
    assert r["component_kl"]["value"] == pytest.approx(math.log(2), abs=0.01)
    w = r["w2"]
    assert w["value"] > 3 * w["floor_mean"] and w["value"] > w["floor_mean"] + 10 * w["floor_std"], w
    assert 0.8 < w["value"] < 1.4, w
    assert r["recall"]["value"] < r["recall"]["floor_mean"] - 0.3  # half the real data unreached


def test_evaluate_samples_far_away_samples_cover_nothing():
    """A diverged sampler's points 100x too far still get assigned to *some* component; they
    must not count as covering it."""
    x = 100 * at_tmin(GMM8.exact, np.random.default_rng(0), 200)
    counts = M.component_counts(x, GMM8.exact.means, GMM8.exact.stds, GMM8.exact.weights)
    assert M.mode_coverage(counts, GMM8.exact.weights) == 1.0  # the trap
    r = evaluate_samples(x, "gmm8", schedule=SCHED, repeats=2)["metrics"]
    assert r["mode_coverage"]["value"] == 0.0 and r["off_mode"]["value"] == 1.0
    assert r["w2"]["value"] > 100 and r["mean_log_density"]["value"] < -1e4


def test_off_mode_share_of_real_data_is_one_minus_q():
    m = GMM8.exact
    x = at_tmin(m, np.random.default_rng(3), 20000)
    a, s = SCHED.alpha(SCHED.t_min), SCHED.sigma(SCHED.t_min)
    share = M.off_mode(x, m.means, m.stds, a, s, q=0.99).mean()
    # 20000 draws: binomial sd of the share at p = 0.01 is 7e-4 (every component is well apart)
    assert abs(share - 0.01) < 4 * math.sqrt(0.01 * 0.99 / len(x)), share


def test_evaluate_samples_non_finite():
    x = at_tmin(GMM8.exact, np.random.default_rng(0), 50)
    x[3, 1] = np.nan
    x[7] = np.inf
    r = evaluate_samples(x, "gmm8", schedule=SCHED)
    assert r["finite"] is False and r["n_nonfinite"] == 2
    assert r["metrics"] and all(v is None for v in r["metrics"].values())
    with pytest.raises(ZooError):
        evaluate_samples(x[:, :1], "gmm8", schedule=SCHED)
    with pytest.raises(ZooError):
        evaluate_samples(x, "no-such-data", schedule=SCHED)


def test_eval_run(tmp_path):
    from zoo.cli import main

    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--arch", "free-mlp", "--steps", "20", "--width", "16", "--batch", "32",
              "--out", str(run), "--quiet"])
    assert e.value.code == 0
    r = eval_run(run, n=300, repeats=2)
    saved = json.loads((run / "eval.json").read_text())
    assert saved == json.loads(json.dumps(r))
    assert set(saved["solvers"]) == {"ode-dopri5", "sde-euler"}
    assert saved["settings"]["n"] == 300 and saved["settings"]["repeats"] == 2
    for entry in saved["solvers"].values():
        assert entry["finite"] and entry["n"] == 300 and entry["nfe"] > 0
        for v in entry["metrics"].values():
            assert all(math.isfinite(v[k]) for k in ("value", "floor_mean", "floor_std")), v
    assert (run / "samples-ode-dopri5.npz").is_file() and (run / "samples-sde-euler.png").is_file()
    # a second evaluation reuses the samples files and adds nll.json when there is one
    (run / "nll.json").write_text(json.dumps({"nll_nats": 3.0, "se": 0.1}))
    r2 = eval_run(run, n=300, repeats=2, solvers=(("ode", None),))
    assert r2["solvers"]["ode-dopri5"]["reused"] and r2["nll"]["nll_nats"] == 3.0
    assert r2["solvers"]["ode-dopri5"]["metrics"] == r["solvers"]["ode-dopri5"]["metrics"]
    assert format_table(r).row_count == 2
    with pytest.raises(ZooError):
        eval_run(run, n=0)
    with pytest.raises(ZooError):
        eval_run(tmp_path, n=10)
