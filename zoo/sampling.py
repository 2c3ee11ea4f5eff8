"""Sampling and likelihood of fields and runs: the same solvers for every field and backend.

x_T ~ N(0, I) comes from a numpy generator seeded by ``seed`` (the same numbers for both
backends); the SDE's Brownian motion is seeded by the same seed. Samples are taken at t_min,
without a final denoising step by default: ODE and SDE samples then follow the same marginal
rho_{t_min}, whose closed form the likelihood and the metrics compare against. ``denoise=True``
applies Tweedie's E[x_0 | x_t_min] instead (it shrinks samples towards the posterior mean).
"""

from __future__ import annotations

import io
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fields.common import Schedule
from zoo import checkpoint
from zoo.registry import ZooError

SOLVERS = ("ode", "sde")
ENGINES = ("torch", "diffrax")


def methods(solver: str, engine: str) -> tuple[str, ...]:
    if engine == "torch":
        from solvers import torch_engine as e
    else:
        from solvers import diffrax_engine as e
    return tuple(e.ODE_METHODS if solver == "ode" else e.SDE_METHODS)


def default_method(solver: str, engine: str) -> str:
    if solver == "sde":
        return "euler"
    return "dopri5" if engine == "torch" else "tsit5"


def default_steps(solver: str, method: str, steps: int | None) -> int | None:
    """The step count a sampler uses: ``steps``, or 500 for an SDE, 100 for a fixed-step ODE
    method, None for an adaptive one."""
    if steps is not None:
        return steps
    if solver == "sde":
        return 500
    return 100 if method in ("euler", "midpoint", "rk4", "heun") else None


def field_fn(field, backend: str, shape: tuple[int, ...]):
    """The field as a torch function for torchdiffeq/torchsde (JAX through the DLPack bridge)."""
    from solvers.adapters import JaxFieldFn, TorchFieldFn

    return TorchFieldFn(field, shape) if backend == "torch" else JaxFieldFn(field, shape)


@contextmanager
def tau_progress(desc: str, show: bool):
    """A progress bar over the flipped time tau in [0, 1]; yields a callback(tau)."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(desc), BarColumn(), TextColumn("t-progress {task.percentage:>3.0f}%"),
                  TimeElapsedColumn()) as bar:
        task = bar.add_task(desc, total=1.0)
        last = [0.0]

        def cb(tau: float) -> None:
            if tau - last[0] >= 0.01 or tau >= 1.0:
                last[0] = tau
                bar.update(task, completed=min(tau, 1.0))

        yield cb
        bar.update(task, completed=1.0)


ODE_MAX_NFE = 20000  # an adaptive ODE sample's budget: 30x the most a finished run has needed


def sample_field(field, backend: str, schedule: Schedule, shape: tuple[int, ...], *, n: int,
                 seed: int = 0, solver: str = "ode", method: str | None = None,
                 steps: int | None = None, rtol: float = 1e-5, atol: float = 1e-5,
                 engine: str = "torch", rho: float = 2.0, denoise: bool = False,
                 dtype: str = "float32", progress: bool = False) -> dict:
    """Draw n samples with the chosen solver. Returns {samples [n, *shape], nfe, wall_s, settings}."""
    method = method or default_method(solver, engine)
    if solver not in SOLVERS:
        raise ZooError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    if engine not in ENGINES:
        raise ZooError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine == "diffrax" and backend != "jax":
        raise ZooError("--engine diffrax samples JAX fields; this field is a torch field")
    if method not in methods(solver, engine):
        raise ZooError(f"unknown {solver} method {method!r} for engine {engine}; choose from "
                       f"{', '.join(methods(solver, engine))}")
    steps = default_steps(solver, method, steps)
    x_T = np.random.default_rng(seed).standard_normal((n, *shape)).astype(dtype)
    settings = {"solver": solver, "method": method, "steps": steps, "rtol": rtol, "atol": atol,
                "engine": engine, "rho": rho, "seed": seed, "n": n, "denoise": denoise,
                "t_min": schedule.t_min, "T": schedule.T}
    from solvers.torch_engine import NFEBudgetExceeded

    t0 = time.perf_counter()
    try:
        if engine == "diffrax":
            from solvers import diffrax_engine as de

            with tau_progress(f"{solver}/{method} (diffrax)", False):
                run = de.sample_ode if solver == "ode" else de.sample_sde
                kw = ({"steps": steps, "rtol": rtol, "atol": atol} if solver == "ode"
                      else {"steps": steps, "seed": seed})
                x, nfe = run(field, schedule, x_T, method=method, rho=rho, **kw)
            if denoise:
                import torch

                fn = field_fn(field, backend, shape)
                x = _tweedie(fn, schedule, torch.as_tensor(x.reshape(n, -1))).reshape(x.shape)
        else:
            import torch

            from solvers import torch_engine as te

            fn = field_fn(field, backend, shape)
            xt = torch.as_tensor(x_T.reshape(n, -1))
            with tau_progress(f"{solver}/{method}", progress) as cb:
                if solver == "ode":
                    x, nfe = te.sample_ode(fn, schedule, xt, method=method, steps=steps,
                                           rtol=rtol, atol=atol, rho=rho, progress=cb,
                                           max_nfe=ODE_MAX_NFE)
                else:
                    x, nfe = te.sample_sde(fn, schedule, xt, method=method, steps=steps,
                                           seed=seed, rho=rho, progress=cb)
            if denoise:
                x = _tweedie(fn, schedule, x)
            x = x.numpy().reshape(n, *shape)
    except ValueError as e:
        raise ZooError(str(e)) from None
    except NFEBudgetExceeded as e:
        raise ZooError(f"ODE sampling ({method}) {e}: the field sends some paths off to large "
                       "|x|; try a fixed-step method (--method rk4 --steps N)") from None
    wall = time.perf_counter() - t0
    return {"samples": np.asarray(x), "nfe": int(nfe), "wall_s": wall, "settings": settings}


def _tweedie(fn, schedule, x):
    from solvers.torch_engine import tweedie

    return tweedie(fn, schedule, x, schedule.t_min).numpy()


def sample_provenance(cfg: dict, *, n: int, seed: int = 0, solver: str = "ode",
                      method: str | None = None, steps: int | None = None, rtol: float = 1e-5,
                      atol: float = 1e-5, engine: str = "torch", rho: float = 2.0,
                      denoise: bool = False, ema: bool = True) -> dict:
    """What a samples file of the run with config ``cfg`` drawn with these settings records about
    what made it: the weights file and its sha256 (config.json's), the run's backend, dtype and
    schedule times, and every sampler setting (defaults resolved). Two samples files with equal
    provenance hold the same numbers; ``zoo.evaluate.eval_run`` reuses a file only then.
    """
    method = method or default_method(solver, engine)
    weights = f"{'ema' if ema else 'weights'}.safetensors"
    sums = cfg.get("sha256")
    return {"weights": weights,
            "weights_sha256": sums.get(weights) if isinstance(sums, dict) else None,
            "backend": cfg["backend"], "dtype": cfg["dtype"], "ema": ema,
            "solver": solver, "method": method, "steps": default_steps(solver, method, steps),
            "rtol": rtol, "atol": atol, "engine": engine, "rho": rho, "seed": seed, "n": n,
            "denoise": denoise, "t_min": cfg["t_min"], "T": cfg["T"]}


def sample_run(run_dir: str | Path, *, n: int, seed: int = 0, solver: str = "ode",
               method: str | None = None, steps: int | None = None, rtol: float = 1e-5,
               atol: float = 1e-5, engine: str = "torch", rho: float = 2.0,
               denoise: bool = False, ema: bool = True, plot: bool = True,
               progress: bool = False) -> Path:
    """Sample a run's field; writes samples-<solver>-<method>.npz (and .png). Returns the npz path.

    The npz holds samples [n, *shape], nfe, wall_s and ``settings`` (JSON): the
    ``sample_provenance`` of the draw (weights file and sha256, every sampler setting) and
    whether every sample is finite. The PNG shows images as a grid beside data, points as a
    scatter, and a latent dataset's samples (the npz keeps the latents) decoded to images beside
    decoded training latents.
    """
    from zoo.api import load, make_schedule
    from zoo.data import get_dataset

    if n <= 0:
        raise ZooError(f"n must be positive, got {n}")
    method = method or default_method(solver, engine)
    field, cfg = load(run_dir, ema=ema)  # checks the weights' sha256 against config.json
    schedule = make_schedule(cfg["schedule"], cfg["t_min"], cfg["T"])
    ds = get_dataset(cfg["data"])
    shape = tuple(cfg.get("shape") or ds.shape)
    out = sample_field(field, cfg["backend"], schedule, shape, n=n, seed=seed, solver=solver,
                       method=method, steps=steps, rtol=rtol, atol=atol, engine=engine, rho=rho,
                       denoise=denoise, dtype=cfg["dtype"], progress=progress)
    x = out["samples"]
    finite = bool(np.all(np.isfinite(x)))
    settings = {**out["settings"], **sample_provenance(
        cfg, n=n, seed=seed, solver=solver, method=method, steps=steps, rtol=rtol, atol=atol,
        engine=engine, rho=rho, denoise=denoise, ema=ema), "finite": finite}
    stem = f"samples-{solver}-{method}"
    buf = io.BytesIO()
    np.savez(buf, samples=x, nfe=out["nfe"], wall_s=out["wall_s"],
             settings=json.dumps(settings))
    path = Path(run_dir) / f"{stem}.npz"
    checkpoint.atomic_write(path, buf.getvalue())
    if plot:
        data = ds.sample(np.random.default_rng([2, seed]), n)
        title = (f"{cfg['arch']} ({cfg['backend']}) on {cfg['data']}: {solver}/{method}, "
                 f"NFE {out['nfe']}")
        if ds.latent is not None:  # latents are shown as the images they decode to
            x_img, data = _decoded(ds, x[:64]), ds.latent.decode(data[:64])
            image_grid(x_img, data, Path(run_dir) / f"{stem}.png", f"{title}, decoded")
        else:
            draw = image_grid if len(shape) == 3 else scatter_vs_data
            draw(x, data, Path(run_dir) / f"{stem}.png", title)
    if not finite:
        raise ZooError(f"{path}: the sampler produced non-finite samples (saved, flagged)")
    return path


def _decoded(ds, z: np.ndarray) -> np.ndarray:
    """Latent samples z [n, d] of a latent dataset decoded to images [n, C, H, W] (float64);
    a non-finite latent gives a NaN image (the grid shows it blank) instead of an error."""
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    out = np.full((len(z), *ds.latent.image_shape), np.nan)
    ok = np.all(np.isfinite(z), axis=1)
    if ok.any():
        out[ok] = ds.latent.decode(z[ok])
    return out


def scatter_vs_data(x: np.ndarray, data: np.ndarray, path: Path, title: str) -> None:
    """Samples beside data (first two coordinates), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    lim = np.nanpercentile(np.abs(data[:, :2]), 99.5) * 1.3
    for ax, pts, name in ((axes[0], data, "data"), (axes[1], x, "samples")):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, lw=0)
        ax.set_title(name)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    checkpoint.atomic_write(path, buf.getvalue())


def image_grid(x: np.ndarray, data: np.ndarray, path: Path, title: str, side: int = 8) -> None:
    """side x side samples beside as many data images ([n, C, H, W] in [-1, 1]), as PNG."""
    image_pair(data, x, ("data", "samples"), path, title, side)


def image_pair(left: np.ndarray, right: np.ndarray, names: tuple[str, str], path: Path,
               title: str, side: int = 8) -> None:
    """Two side x side grids of images ([n, C, H, W] in [-1, 1]) side by side, titled, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, imgs, name in ((axes[0], left, names[0]), (axes[1], right, names[1])):
        ax.imshow(tile(imgs, side), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    checkpoint.atomic_write(path, buf.getvalue())


def tile(imgs: np.ndarray, side: int) -> np.ndarray:
    """The first side^2 images [n, C, H, W] as one [side (H+1), side (W+1)] (or RGB) array, with
    a one-pixel border; channels beyond the first three are dropped, non-finite pixels show as
    the border value."""
    imgs = np.nan_to_num(np.asarray(imgs[: side * side], np.float64), nan=-1.0, posinf=1.0,
                         neginf=-1.0).clip(-1, 1)
    n, c, h, w = imgs.shape
    c = 1 if c not in (1, 3) else c
    out = np.full((side * (h + 1) + 1, side * (w + 1) + 1, c), -1.0)
    for i in range(n):
        r, q = divmod(i, side)
        out[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = \
            imgs[i, :c].transpose(1, 2, 0)
    return out[..., 0] if c == 1 else (out + 1) / 2


NLL_MAX_NFE = 2000  # 3x the most any finished run has needed (674, a latent field)


def nll_run(run_dir: str | Path, *, n: int, seed: int = 0, estimator: str = "auto",
            rtol: float = 1e-5, atol: float = 1e-5, ema: bool = True,
            max_nfe: int = NLL_MAX_NFE, progress: bool = False) -> dict:
    """Negative log-likelihood of held-out data under the run's probability-flow ODE.

    Held-out data (an image set's test split) come from the stream SeedSequence([1, seed]),
    independent of training's. Image sets are dequantised: each pixel's level x0 gets uniform
    noise over its bin, x = x0 + u, u ~ U(-b/2, b/2), b = 2 / (levels - 1) (0.125 for digits'
    17 levels), and ``bits_per_dim`` is the discrete-data bound of the literature,
    (E[-log p_{t_min}(x)] / d - log b) / log 2 >= -log2 P(bin) per pixel (Jensen), comparable
    with log2(levels) for a uniform model (4.09 bits on digits); ``nll_nats`` stays the
    continuous one. Analytic data (digits-gmm too) are continuous: bits_per_dim = nll / (d log 2).
    estimator: "exact" (Jacobian trace), "hutchinson" (Rademacher), or "auto": exact for points
    up to d = 64, Hutchinson on image backbones (an exact trace there costs d backward passes of
    the network per solver step; one probe per point keeps the estimate unbiased).
    ``escaped``: how many paths end beyond the prior's chi2_d 1 - 1e-6 quantile of |x(T)|^2, so
    the prior scores them as (near) impossible: a field that pushes held-out points off to large
    |x| (a memorising field does, between its training points) gives an NLL that measures that
    escape, not the density. A solve past ``max_nfe`` field evaluations stops there and nll.json
    says so (``diverged``, with the t reached), with no NLL: one escaping path shrinks the
    adaptive steps of the whole batch.
    Writes nll.json (with the sha256 of the weights it measured) and returns it.
    """
    import torch
    from scipy.stats import chi2

    from solvers.torch_engine import NFEBudgetExceeded, log_likelihood
    from zoo.api import load, make_schedule
    from zoo.data import get_dataset

    if n <= 0:
        raise ZooError(f"n must be positive, got {n}")
    if max_nfe <= 0:
        raise ZooError(f"max_nfe must be positive, got {max_nfe}")
    if estimator not in ("auto", "exact", "hutchinson"):
        raise ZooError(f"estimator must be auto, exact or hutchinson, got {estimator!r}")
    field, cfg = load(run_dir, ema=ema)
    schedule = make_schedule(cfg["schedule"], cfg["t_min"], cfg["T"])
    ds = get_dataset(cfg["data"])
    rng = np.random.default_rng([1, seed])
    x0 = ds.sample_heldout(rng, n).reshape(n, -1)
    dequant = None
    if ds.images is not None:
        b = ds.images.bin_width
        x0 = x0 + rng.uniform(-b / 2, b / 2, size=x0.shape)
        dequant = {"levels": ds.images.levels, "bin_width": b, "noise": "uniform over the bin"}
    x0 = x0.astype(cfg["dtype"])
    shape = tuple(cfg.get("shape") or ds.shape)
    if estimator == "auto":
        estimator = "exact" if ds.dim <= 64 and len(shape) == 1 else "hutchinson"
    probes = None
    if estimator == "hutchinson":
        probes = torch.as_tensor(2.0 * rng.integers(0, 2, size=x0.shape) - 1.0,
                                 dtype=torch.float64 if cfg["dtype"] == "float64" else torch.float32)
    fn = field_fn(field, cfg["backend"], shape)
    t0 = time.perf_counter()
    result = {"dequantisation": dequant, "n": n, "seed": seed, "estimator": estimator,
              "rtol": rtol, "atol": atol, "max_nfe": max_nfe, "ema": ema,
              "weights_sha256": cfg["sha256"][f"{'ema' if ema else 'weights'}.safetensors"]}
    try:
        with tau_progress(f"NLL ({estimator} divergence)", progress) as cb:
            logp, xT, nfe = log_likelihood(fn, schedule, torch.as_tensor(x0), probes=probes,
                                           rtol=rtol, atol=atol, max_nfe=max_nfe, progress=cb)
    except NFEBudgetExceeded as e:
        result.update(nll_nats=None, se=None, bits_per_dim=None, nfe=e.nfe,
                      wall_s=time.perf_counter() - t0,
                      diverged={"t_reached": e.t, "x_max": e.x_max, "reason": str(e)})
        checkpoint.write_json(Path(run_dir) / "nll.json", result)
        return result
    logp = logp.numpy().astype(np.float64)
    nll = float(-logp.mean())
    bpd = nll / (ds.dim * math.log(2))
    if dequant is not None:
        bpd -= math.log(dequant["bin_width"]) / math.log(2)
    r2 = (xT.double() ** 2).sum(1).numpy()
    result.update(nll_nats=nll, se=float(logp.std() / math.sqrt(n)), bits_per_dim=float(bpd),
                  nfe=nfe, escaped=int((r2 > chi2.isf(1e-6, ds.dim)).sum()),
                  wall_s=time.perf_counter() - t0)
    if ds.exact is not None:  # the closed-form reference: -log rho_{t_min} of the same points
        from zoo.api import create

        ex = create("exact", "torch", data=cfg["data"], schedule=schedule)
        ref = ex.log_density(torch.as_tensor(x0.astype(np.float64)),
                             torch.full((n,), schedule.t_min, dtype=torch.float64)).numpy()
        result["exact_nll_nats"] = float(-ref.mean())
    checkpoint.write_json(Path(run_dir) / "nll.json", result)
    return result
