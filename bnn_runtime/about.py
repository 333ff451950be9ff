"""The distribution's name and version, written once: ``bnn --version`` and the exporter's provenance read them."""

from __future__ import annotations

DISTRIBUTION = "untied-bnn"


def version(distribution: str = DISTRIBUTION) -> str:
    """The installed version of ``distribution`` (this project by default), or ``"dev"`` for a source tree."""
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as installed

        return installed(distribution)
    except PackageNotFoundError:
        return "dev"
