"""What every benchmark shares: interleaving statistics (quartiles, paired ratios), the
machine and library versions, the JSON record, peak RSS, the console."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from pathlib import Path

from zoo.registry import ZooError

VERSIONED = ("numpy", "torch", "jax", "jaxlib", "equinox", "optax")


def sync(x) -> None:
    """Wait until ``x`` is computed (a JAX array; a torch tensor on a GPU)."""
    if hasattr(x, "block_until_ready"):
        x.block_until_ready()
    elif getattr(x, "is_cuda", False):
        import torch

        torch.cuda.synchronize(x.device)


def gpu_names() -> dict:
    """{"torch": name of torch's CUDA device 0, "jax": JAX's default device kind when it is a
    GPU}, only those present."""
    import jax
    import torch

    out = {}
    if torch.cuda.is_available():
        out["torch"] = torch.cuda.get_device_name(0)
    if jax.default_backend() == "gpu":
        out["jax"] = jax.devices()[0].device_kind
    return out


def jax_device(device: str):
    """A context placing JAX's arrays and computations on the CPU (``device`` "cpu") or on its
    GPU ("cuda"; ZooError when JAX has none: the [cuda] extra installs its CUDA plugin)."""
    import jax

    if device == "cuda":
        if jax.default_backend() != "gpu":
            raise ZooError("--device cuda: JAX sees no GPU here (pip install 'zoo[cuda]' adds "
                           "its CUDA plugin)")
        return jax.default_device(jax.devices()[0])
    return jax.default_device(jax.devices("cpu")[0])


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> tuple[dict, dict]:
    """({"cpu", "cpu_count", "torch_threads", "platform"[, "gpu": gpu_names()]}, {package:
    version}) of this process."""
    from importlib import metadata

    import torch

    machine = {"cpu": _cpu_model(), "cpu_count": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    gpus = gpu_names()
    if gpus:
        machine["gpu"] = gpus
    versions = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return machine, versions


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    med = statistics.median(xs)
    if len(xs) < 2:
        return med, med, med
    q = statistics.quantiles(xs, n=4)
    return q[0], med, q[2]


def paired_ratio(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Quartiles (q1, median, q3) of the per-round ratios x_r / y_r of two interleaved series.
    Each round's ratio sees one machine state, so load that drifts between rounds cancels; the
    spread of the ratios says how well one run pins the ratio down (a ratio of medians has none)."""
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"paired series need equal, non-zero lengths ({len(xs)} vs {len(ys)})")
    return quartiles([x / y for x, y in zip(xs, ys)])


def hwm_mib() -> float:
    """This process's peak resident set size so far, MiB: VmHWM of /proc/self/status (Linux; it
    belongs to the process's own address space, so unlike ru_maxrss it does not inherit the
    parent's size across fork and exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def report_setup(show: bool, out, example: str, width: int | None = None):
    """(rich Console, out Path or None) of a benchmark: quiet unless ``show``, ``width`` columns
    at least when writing to a log rather than a terminal; ZooError when ``out`` is a directory
    (``example``: a file name to suggest)."""
    from rich.console import Console

    console = Console(quiet=not show)
    if width and not console.is_terminal:
        console.width = max(console.width, width)
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.is_dir():
        raise ZooError(f"--out {out_path}: is a directory (give a file name, e.g. {example})")
    return console, out_path


def write_record(out_path: Path, kind: str, settings: dict, results: list[dict],
                  extra: dict | None = None) -> None:
    """The JSON record: kind, date, settings, machine, versions, results, then ``extra``'s keys."""
    from zoo import checkpoint

    machine, versions = machine_info()
    record = {"kind": kind,
              "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "settings": settings, "machine": machine, "versions": versions,
              "results": results, **(extra or {})}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(out_path, record)
