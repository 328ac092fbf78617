"""The `lesion-review` command line: thin wrappers that call the domain packages."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def main(verbose: bool) -> None:
    """Lesion Review: review and extend DeepLesion annotations."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--patients", type=int, default=10, show_default=True, help="Number of synthetic patients.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=click.Choice(["512", "768", "1024"]), default="512", show_default=True)
@click.option("--metadata-only", is_flag=True, help="Write DL_info.csv only, no images.")
@click.option("--lesions", type=int, default=None, help="With --metadata-only: number of CSV rows.")
def synth(out_dir: Path, patients: int, seed: int, size: str, metadata_only: bool, lesions: int | None) -> None:
    """Generate a CT-realistic synthetic dataset in the DeepLesion layout."""
    raise click.ClickException("synth: not built yet")


if __name__ == "__main__":  # pragma: no cover
    main()
