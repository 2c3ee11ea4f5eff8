"""The `zoo` command line. Errors a user can cause print one line on stderr and exit with 2.

One file per command group: train (list, train), measure (sample, nll, check, eval, curve),
suite (sweep, leaderboard, oracle), bench, models (classifier, autoencoder); params holds the
parameter types they share."""

from __future__ import annotations

import os
import sys

import click

from zoo.cli import bench, measure, models, suite, train
from zoo.cli.params import parse_options
from zoo.registry import ZooError

__all__ = ["cli", "main", "parse_options", "jax_compilation_cache"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A zoo of conservative and free score fields for diffusion models (PyTorch and Equinox).

    Train any registered field with one protocol, in either backend: `zoo list` shows them,
    `zoo train --arch free-mlp` trains one, `zoo bench train` times them side by side.
    """


for _module, _names in ((train, ("list_cmd", "train")),
                        (measure, ("sample", "nll", "check", "eval_cmd", "curve_cmd")),
                        (suite, ("sweep_cmd", "leaderboard_cmd", "oracle_cmd")),
                        (bench, ("bench",)), (models, ("classifier", "autoencoder"))):
    for _name in _names:
        cli.add_command(getattr(_module, _name))


JAX_CACHE_MAX_BYTES = 2 * 2**30


def jax_compilation_cache() -> None:
    """Keep XLA's compiled programs on disk for every zoo command and the workers it starts.

    A sweep compiles the same training step once per seed, and a resumed run compiles it again;
    a cached executable is reused instead (a UNet step: about 30 s of compiling on this CPU).
    The cache key is the program and the compiler options, so results are bit-for-bit those of
    a fresh compile. Set through the environment before JAX is imported, so spawned workers
    inherit it: ``JAX_COMPILATION_CACHE_DIR`` picks the folder (empty: no cache), default
    ``$ZOO_CACHE_DIR/jax`` (``~/.cache/zoo/jax``, beside the noise floors' cache), least
    recently used entries dropped beyond 2 GiB.
    """
    base = os.environ.get("ZOO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "zoo")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(base, "jax"))
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(JAX_CACHE_MAX_BYTES))


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's own usage errors and ZooError become one line and exit code 2."""
    jax_compilation_cache()
    try:
        rv = cli.main(args=argv, prog_name="zoo", standalone_mode=False)
    except click.exceptions.UsageError as e:
        msg = e.format_message().replace("\n", " ")
        cmd = e.ctx.command_path if e.ctx else "zoo"
        click.echo(f"{cmd}: error: {msg}", err=True)
        sys.exit(2)
    except ZooError as e:
        click.echo(f"zoo: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("zoo: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("zoo: interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
