"""Noise floors: 20 real-vs-real draws by default, from a stream of their own (not the run's
seed), cached on disk once per key, and right where the answer is known in closed form."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from scipy.special import logsumexp

import zoo
from zoo import evaluate as E
from zoo import metrics as M

SCHED = zoo.make_schedule("ou")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder of this test's own (counts of computations start from nothing)."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    return tmp_path / "floors"


@pytest.fixture
def counted(monkeypatch):
    """Counts the calls of the MMD metric: one per real-vs-real draw computed."""
    calls = [0]
    real = M.mmd_rbf

    def mmd(x, y, *a, **k):
        calls[0] += 1
        return real(x, y, *a, **k)

    monkeypatch.setattr(M, "mmd_rbf", mmd)
    return calls


def rho_tmin_draw(rng: np.random.Generator, n: int) -> np.ndarray:
    """n points of rho_{t_min} of gmm8, drawn here from its definition (not zoo's samplers)."""
    mix = zoo.get_dataset("gmm8").exact
    a, s = float(SCHED.alpha(SCHED.t_min)), float(SCHED.sigma(SCHED.t_min))
    k = rng.choice(len(mix.weights), size=n, p=mix.weights)
    x0 = mix.means[k] + mix.stds[k, None] * rng.standard_normal((n, 2))
    return a * x0 + s * rng.standard_normal((n, 2))


def log_rho_tmin(x: np.ndarray) -> np.ndarray:
    """log rho_{t_min}(x) of gmm8 in closed form: a mixture of N(alpha m_k, v_k I)."""
    mix = zoo.get_dataset("gmm8").exact
    a, s = float(SCHED.alpha(SCHED.t_min)), float(SCHED.sigma(SCHED.t_min))
    v = a**2 * mix.stds**2 + s**2  # [K]
    d2 = ((x[:, None, :] - a * mix.means[None]) ** 2).sum(-1)  # [n, K]
    return logsumexp(np.log(mix.weights) - np.log(2 * np.pi * v) - 0.5 * d2 / v, axis=1)


# ---- 20 draws by default, everywhere ---------------------------------------------------------

def test_twenty_draws_is_the_default_everywhere(cache):
    from zoo.cli import cli
    from zoo.oracle import OracleConfig
    from zoo.sweep.suites import _STAGES

    for fn in (E.noise_floors, E.evaluate_samples, E.eval_run, M.noise_floor):
        assert inspect.signature(fn).parameters["repeats"].default == 20, fn.__name__
    opt = next(p for p in cli.commands["eval"].params if p.name == "repeats")
    assert opt.default == 20
    assert _STAGES["eval"]["repeats"] == 20 and OracleConfig().repeats == 20
    x = rho_tmin_draw(np.random.default_rng(0), 40)
    r = E.evaluate_samples(x, "gmm8", schedule=SCHED)
    assert r["repeats"] == 20 and r["floors_cache"] == "miss"
    (path,) = cache.iterdir()
    rec = json.loads(path.read_text())
    assert rec["key"]["repeats"] == 20
    assert all(len(v) == 20 for v in rec["draws"].values()) and set(rec["draws"]) == set(
        r["metrics"])


# ---- the cache ---------------------------------------------------------------------------------

def test_floors_honour_repeats_and_are_computed_once_per_key(cache, counted, monkeypatch):
    kw = {"schedule": SCHED, "repeats": 7}
    rec = E.noise_floors("gmm8", 30, 40, **kw)
    assert counted[0] == 7 and rec["cache"] == "miss"
    path = E.floors_path(rec["key"])
    assert path.parent == cache and path.is_file() and path.name.startswith("gmm8-n30-m40-r7-")
    for k, (mean, std) in rec["floors"].items():  # the floor is the mean and std of the draws
        d = rec["draws"][k]
        assert len(d) == 7 and mean == pytest.approx(np.mean(d)) and std == pytest.approx(
            np.std(d, ddof=1))

    hit = E.noise_floors("gmm8", 30, 40, **kw)
    assert counted[0] == 7 and hit["cache"] == "hit" and hit["floors"] == rec["floors"]

    # every part of the key counts: sizes, repeats, metric settings, schedule, code version
    for change in ({"n_ref": 41}, {"repeats": 8}, {"prdc_k": 4}, {"max_points": 20},
                   {"schedule": zoo.make_schedule("ou", t_min=2e-3)}):
        before = counted[0]
        args = {"n_ref": 40, **kw, **change}
        r = E.noise_floors("gmm8", 30, args.pop("n_ref"), **args)
        assert r["cache"] == "miss" and counted[0] - before == args["repeats"], change
    before = counted[0]
    monkeypatch.setattr(E, "FLOORS_VERSION", E.FLOORS_VERSION + 1)
    assert E.noise_floors("gmm8", 30, 40, **kw)["cache"] == "miss" and counted[0] == before + 7
    monkeypatch.setattr(E, "FLOORS_VERSION", E.FLOORS_VERSION - 1)

    # a corrupt or foreign file is computed again (and rewritten whole)
    path.write_text('{"key": ')
    r = E.noise_floors("gmm8", 30, 40, **kw)
    assert r["cache"] == "miss" and r["floors"] == rec["floors"]
    assert json.loads(path.read_text())["floors"] == rec["floors"]
    path.write_text(json.dumps({**rec, "key": {**rec["key"], "n": 31}}))
    assert E.noise_floors("gmm8", 30, 40, **kw)["cache"] == "miss"
    bad = json.loads(path.read_text())
    bad["draws"]["w2"] = bad["draws"]["w2"][:3]  # fewer draws than the key says
    path.write_text(json.dumps(bad))
    assert E.noise_floors("gmm8", 30, 40, **kw)["cache"] == "miss"
    assert not list(cache.glob(".*tmp*"))  # atomic writes leave no temporary files

    # without the cache nothing is read or written
    before, files = counted[0], sorted(cache.iterdir())
    off = E.noise_floors("gmm8", 30, 40, cache=False, **kw)
    assert off["cache"] == "off" and counted[0] == before + 7 and sorted(cache.iterdir()) == files
    assert off["floors"] == rec["floors"]  # and the same numbers: one fixed stream per key


def test_cache_dir_follows_zoo_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "c"))
    assert E.floors_cache_dir() == tmp_path / "c" / "floors"
    monkeypatch.delenv("ZOO_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert E.floors_cache_dir() == tmp_path / "home" / ".cache" / "zoo" / "floors"


def test_floors_do_not_depend_on_the_run_seed(cache):
    """The old floors continued the reference stream default_rng([3, seed]): another seed, other
    floors. Now every seed is judged against the same floors, and the reference still moves."""
    x = rho_tmin_draw(np.random.default_rng(1), 60)
    a = E.evaluate_samples(x, "gmm8", schedule=SCHED, seed=0, repeats=4)
    b = E.evaluate_samples(x, "gmm8", schedule=SCHED, seed=5, repeats=4, cache=False)
    for k in a["metrics"]:
        assert a["metrics"][k]["floor_mean"] == b["metrics"][k]["floor_mean"], k
        assert a["metrics"][k]["floor_std"] == b["metrics"][k]["floor_std"], k
    assert a["metrics"]["w2"]["value"] != b["metrics"]["w2"]["value"]
    assert a["floors_stream"] == [5, 60, 60] and b["floors_cache"] == "off"


# ---- known answers -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gmm8_floors(tmp_path_factory):
    """gmm8 floors for n = 150 samples vs n_ref = 300 references, 20 draws (cached per session)."""
    return E.noise_floors("gmm8", 150, 300, schedule=SCHED)


def test_mean_log_density_floor_is_minus_the_entropy(gmm8_floors):
    """The floor of the mean log-density is its value on real data: E log rho = -H(rho_{t_min}).
    The differential entropy comes from 4 x 10^5 Monte Carlo points of the closed form; the floor
    mean must match within 4 standard errors (floor_std / sqrt(20), with the MC error)."""
    mean, std = gmm8_floors["floors"]["mean_log_density"]
    lp = log_rho_tmin(rho_tmin_draw(np.random.default_rng(11), 400_000))
    neg_h, se_mc = lp.mean(), lp.std() / np.sqrt(len(lp))
    se = np.hypot(std / np.sqrt(20), se_mc)
    assert abs(mean - neg_h) < 4 * se, (mean, neg_h, se)
    # the spread of a mean of n = 150 log-densities: sd(log rho) / sqrt(150); a sample std of 20
    # draws is within +-50% of its value with probability > 0.999
    assert 0.5 < std / (lp.std() / np.sqrt(150)) < 1.5, (std, lp.std())


def test_unbiased_mmd_floor_is_zero_and_energy_floor_is_not(gmm8_floors):
    """MMD_u^2 is unbiased: 0 in expectation between two draws of one distribution. The energy
    distance is a V-statistic: positive between any two finite draws."""
    fl = gmm8_floors["floors"]
    mean, std = fl["mmd_rbf"]
    assert std > 0 and abs(mean) < 4 * std / np.sqrt(20), (mean, std)
    mean, std = fl["energy"]
    assert mean > 4 * std / np.sqrt(20) > 0, (mean, std)
    # a floor is a spread of real-vs-real values, recorded draw by draw
    assert len(gmm8_floors["draws"]["mmd_rbf"]) == 20
    assert np.min(gmm8_floors["draws"]["mmd_rbf"]) < 0 < np.max(gmm8_floors["draws"]["mmd_rbf"])
