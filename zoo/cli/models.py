"""`zoo classifier` and `zoo autoencoder`: the trained models the image metrics and latent
datasets rest on."""

from __future__ import annotations

from pathlib import Path

import click

from zoo.cli.params import POSITIVE_INT
from zoo.registry import ZooError

# --- zoo classifier: the offline image-quality classifier (zoo/classifier.py) ---------------------

_CLASSIFIER_DATA = click.Choice(["digits", "mnist"])


@click.group()
def classifier() -> None:
    """The small CNN whose features the image metrics use (FD, class histogram, PRDC).

    The digits classifier ships with the package (zoo/assets/digits-classifier.safetensors and
    its .json record with the sha256); mnist reads its local files ($ZOO_DATA_ROOT, else ./data).
    """


@classifier.command("train", short_help="Train the classifier deterministically; write weights and record.")
@click.option("--data", default="digits", show_default=True, type=_CLASSIFIER_DATA,
              help="Image dataset whose train split the classifier learns.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for DATA-classifier.safetensors and .json [default: the package's "
              "zoo/assets, replacing the shipped file].")
def classifier_train(data: str, out: str | None) -> None:
    """Train the classifier deterministically (seed 0, one thread, fixed data order) and write
    its weights and record (sha256, train and test accuracy, architecture, settings, versions).
    On the same machine and library versions a retrained file has the same sha256."""
    import time

    from zoo.classifier import paths, save_classifier, train_classifier

    t0 = time.perf_counter()
    model, record = train_classifier(data)
    seconds = time.perf_counter() - t0
    record = save_classifier(model, record, out)
    weights, rec = paths(data, out)
    click.echo(f"wrote {weights} and {rec.name}: sha256 {record['sha256']}")
    click.echo(f"train accuracy {record['train_accuracy']:.4f}, test accuracy "
               f"{record['test_accuracy']:.4f} ({record['n_test']} images), "
               f"trained in {seconds:.1f} s")


@classifier.command("check", short_help="Check the weights' sha256 and recompute the test accuracy.")
@click.option("--data", default="digits", show_default=True, type=_CLASSIFIER_DATA,
              help="Dataset whose test split the accuracy is measured on.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="A classifier's .safetensors (its record is the .json beside it) "
              "[default: the package's DATA-classifier.safetensors].")
def classifier_check(data: str, weights: str | None) -> None:
    """Check the weights' sha256 against their record and recompute the test accuracy; a
    mismatching file (or an accuracy other than the recorded one) is an error, exit 2."""
    from zoo.classifier import _image_set, accuracy, load_classifier, paths

    model, record = load_classifier(data, weights)
    images = _image_set(data)
    acc = accuracy(model, images.test, images.test_labels)
    click.echo(f"{weights or paths(data)[0]}: sha256 {record['sha256']} matches its record")
    click.echo(f"test accuracy {acc:.4f} ({round(acc * len(images.test))}/{len(images.test)}), "
               f"recorded {record['test_accuracy']:.4f}")
    if abs(acc - record["test_accuracy"]) > 0.5 / len(images.test):
        raise ZooError(f"test accuracy {acc:.4f} differs from the recorded "
                       f"{record['test_accuracy']:.4f}")


# --- zoo autoencoder: the first stage of latent diffusion (zoo/autoencoder.py) --------------------

_AUTOENCODER_DATA = click.Choice(["digits", "mnist"])


@click.group()
def autoencoder() -> None:
    """The autoencoder whose latents the latent datasets are (latent-digits, latent-mnist).

    It lives in results/autoencoders/DATA/ (weights.safetensors, config.json with its sha256,
    reconstructions.png); $ZOO_AUTOENCODER_DIR replaces results/autoencoders. A latent run
    records the sha256 it was trained with and refuses any other autoencoder.
    """


@autoencoder.command("train", short_help="Train the autoencoder deterministically; write weights and config.")
@click.option("--data", default="digits", show_default=True, type=_AUTOENCODER_DATA,
              help="Image dataset whose train split the autoencoder learns.")
@click.option("--latent", default=16, show_default=True, type=POSITIVE_INT,
              help="Numbers in the (flat) latent.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for weights.safetensors, config.json and reconstructions.png "
              "[default: results/autoencoders/DATA, or $ZOO_AUTOENCODER_DIR/DATA].")
def autoencoder_train(data: str, latent: int, out: str | None) -> None:
    """Train the autoencoder deterministically (seed 0, one thread, fixed data order and noise)
    and write its weights, config (latent scale and shift, reconstruction MSE and FD, sha256,
    settings, versions) and a grid of test reconstructions. On the same machine and library
    versions a retrained file has the same sha256. Runs trained on the latents of an earlier
    autoencoder then refuse to load (retrain them)."""
    from zoo.autoencoder import (
        AutoencoderConfig,
        _float64,
        _image_set,
        reconstruction_fd,
        save_autoencoder,
        train_autoencoder,
    )
    from zoo.data import autoencoder_dir
    from zoo.image_metrics import classifier_of

    shape = tuple(_image_set(data).train.shape[1:])
    model, record = train_autoencoder(data, AutoencoderConfig(shape=shape, latent=latent))

    if classifier_of(data) is not None:
        try:
            record["reconstruction_fd"] = reconstruction_fd(_float64(model), record)
        except ZooError as e:  # no classifier for this data (mnist's is not shipped)
            click.echo(f"no reconstruction FD: {e}", err=True)
    record = save_autoencoder(model, record, out)
    where = Path(out) if out else autoencoder_dir(data)
    click.echo(f"wrote {where}/weights.safetensors, config.json, reconstructions.png: "
               f"sha256 {record['sha256']}")
    click.echo(f"reconstruction MSE train {record['train_mse']:.5f}, test {record['test_mse']:.5f}; "
               f"latent scale {record['latent_scaling']['scale']:.4f}; trained in "
               f"{record['train_seconds']:.1f} s")
    if "reconstruction_fd" in record:
        r = record["reconstruction_fd"]
        click.echo(f"FD at t_min vs the {r['n_ref']} test images: test reconstructions "
                   f"{r['test']:.3f}; reconstructed train draws of {r['n']} "
                   f"{r['train_draws'][0]:.3f} ± {r['train_draws'][1]:.3f}, real train draws "
                   f"(the floor) {r['floor'][0]:.3f} ± {r['floor'][1]:.3f}")


@autoencoder.command("check", short_help="Check the weights' sha256 and recompute the test MSE.")
@click.option("--data", default="digits", show_default=True, type=_AUTOENCODER_DATA)
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="The autoencoder's folder [default: results/autoencoders/DATA, or "
              "$ZOO_AUTOENCODER_DIR/DATA].")
def autoencoder_check(data: str, directory: str | None) -> None:
    """Check the weights' sha256 against config.json and recompute the test reconstruction MSE;
    a mismatching file (or an MSE other than the recorded one) is an error, exit 2."""
    from zoo.autoencoder import _image_set, load_autoencoder, reconstruction_mse
    from zoo.data import autoencoder_dir

    where = Path(directory) if directory else autoencoder_dir(data)
    model, record = load_autoencoder(where)
    if record.get("data") != data:
        raise ZooError(f"{where}: an autoencoder for {record.get('data')!r}, not {data!r}")
    mse = reconstruction_mse(model, _image_set(data).test)
    click.echo(f"{where / 'weights.safetensors'}: sha256 {record['sha256']} matches config.json")
    click.echo(f"test reconstruction MSE {mse:.6f} ({len(_image_set(data).test)} images), "
               f"recorded {record['test_mse']:.6f}")
    if abs(mse - record["test_mse"]) > 1e-9 * max(record["test_mse"], 1e-12):
        raise ZooError(f"test reconstruction MSE {mse:.6g} differs from the recorded "
                       f"{record['test_mse']:.6g}")
