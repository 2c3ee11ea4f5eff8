"""Shared helpers. Field tests are parametrised over the registry at collection time, so a newly
registered field is checked the moment it exists."""

from __future__ import annotations

import contextlib
import io
import os

# XLA's LLVM back end at -O0: the tests compile many small programs once each, and compiling
# dominates (helmholtz-unet's float64 score: 15 -> 7.5 s to compile). The HLO passes, so the
# programs' arithmetic, are the same; only code generation is cheaper. Appended to the user's
# XLA_FLAGS unless they set the level themselves.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2`: one worker per core, each single-threaded (set before torch or JAX starts),
    # or both workers' torch and XLA thread pools fight over both cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "xla_cpu_multi_thread_eigen" not in os.environ["XLA_FLAGS"]:
        os.environ["XLA_FLAGS"] += (" --xla_cpu_multi_thread_eigen=false"
                                    " intra_op_parallelism_threads=1")
    import torch

    torch.set_num_threads(1)

if not os.environ.get("PYTEST_XDIST_WORKER") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # `zoo` keeps XLA's compiled programs in $ZOO_CACHE_DIR/jax (zoo.cli.jax_compilation_cache);
    # the tests get a fresh folder of their own, shared by the xdist workers and the sweeps',
    # resumes' and Ray's subprocesses (they inherit the environment), removed at exit: nothing
    # from outside the session is reused, and the user's cache is left alone. (It saves little
    # here: 232 vs 245 s on the sweep, Ray, resume, UNet and DiT test files.)
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="zoo-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

import numpy as np
import pytest

import zoo
from zoo import backends


def trainable_entries():
    return [i for i in zoo.entries() if i.trainable]


# The registry matrix on image backbones (XLA compiles of twice-differentiated UNets and DiTs,
# trainings) takes about ten CPU-minutes: it runs with `pytest -m slow`, while the default suite
# keeps every image field's float64 parity of scores and one learning check per image backbone.
SLOW = pytest.mark.slow


def slow_if_image(items, info_of=lambda v: v):
    """pytest.param(v, marks=slow) for the values whose field takes images."""
    return [pytest.param(v, marks=SLOW) if info_of(v).data == "image" else v for v in items]


def both_backend_names():
    return sorted({i.name for i in trainable_entries()
                   if set(zoo.registry.backends_of(i.name)) >= {"torch", "jax"}})


def entry_id(info) -> str:
    return f"{info.name}-{info.backend}"


IMAGE_SHAPE = (1, 8, 8)  # digits


def shape_for(info, dim: int = 2) -> tuple[int, ...]:
    """The data shape a field is tested on: digits' (1, 8, 8) for image fields, else (dim,)."""
    return IMAGE_SHAPE if info.data == "image" else (dim,)


def data_for(info) -> list[str]:
    """Datasets a field is trained on in the registry tests."""
    return ["digits"] if info.data == "image" else ["gmm8", "checkerboard"]


def build(name: str, backend: str, dim: int = 2, dtype: str = "float64", seed: int = 0,
          perturb: bool = True):
    """A field with its initial weights for ``seed``, by default moved off them by 0.05 N(0, 1)
    noise (the same numbers in both backends): layers that start at exactly zero by design
    (adaLN-zero gates, DiT's final layer) would make score and Jacobian checks compare zeros."""
    info = zoo.get_info(name, backend)
    f = zoo.create(name, backend, shape=shape_for(info, dim), dtype=dtype, init=seed,
                   **info.small)
    if not perturb:
        return f
    b = backends.get(backend)
    rng = np.random.default_rng([seed, 7])
    params = b.named_params(f)
    return b.load_params(f, {k: params[k] + 0.05 * rng.standard_normal(params[k].shape)
                             for k in sorted(params)}, dtype)


def rel(a, b) -> float:
    """max |a - b| / max |b| (a relative error that ignores tiny entries' own noise)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(scope="session", autouse=True)
def zoo_cache_dir(tmp_path_factory):
    """ZOO_CACHE_DIR (the noise floors' cache) in a temporary folder for the whole session: tests
    never read or write ~/.cache, and share the floors they compute (subprocesses inherit it)."""
    import os

    path = tmp_path_factory.mktemp("zoo-cache")
    old = os.environ.get("ZOO_CACHE_DIR")
    os.environ["ZOO_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ZOO_CACHE_DIR", None)
    else:
        os.environ["ZOO_CACHE_DIR"] = old


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def forward_points(rng, data: str, t: float, n: int):
    """x_t = alpha_t x_0 + sigma_t eps for x_0 from the dataset: [n, *shape], and t as [n]."""
    ds = zoo.get_dataset(data)
    s = zoo.make_schedule("ou")
    tt = np.full(n, t)
    x0 = ds.sample(rng, n)
    b = (-1,) + (1,) * (x0.ndim - 1)
    return (s.alpha(tt).reshape(b) * x0 + s.sigma(tt).reshape(b) * rng.standard_normal(x0.shape),
            tt)


B = backends.get


def dead_parameters(module, out) -> list[str]:
    """Names of the torch ``module``'s parameters that a random projection of ``out`` does not
    reach (no gradient, or an all-zero one)."""
    import torch

    proj = torch.as_tensor(np.random.default_rng(2).standard_normal(out.shape), dtype=out.dtype)
    names, params = zip(*module.named_parameters())
    grads = torch.autograd.grad((out * proj).sum(), params, allow_unused=True)
    return [k for k, g in zip(names, grads) if g is None or not torch.any(g != 0)]


def run(args, capsys):
    """``zoo ARGS`` in this process, output captured by pytest: (exit code, stdout, stderr)."""
    from zoo.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def cli(args: list[str]) -> tuple[int, str, str]:
    """``zoo ARGS`` in this process, output captured here: (exit code, stdout, stderr)."""
    from zoo.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny networks on shared cores: a second torch thread only adds contention (many times
    slower here). Modules use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
