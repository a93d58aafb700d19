"""rig/card/catalog.yaml: the images the rig knows by name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rig.config import parse_yaml
from rig.errors import ConfigError, ValidationErrors
from rig.schema import validate

CATALOG_ENV = "RIG_CATALOG"
CANDIDATE = "@candidate"


@dataclass(frozen=True)
class VirtualRecipe:
    recipe: str
    version: str  # the product version the virtual image ships


@dataclass(frozen=True)
class CatalogImage:
    name: str
    description: str
    base: str
    scheme: str
    product: str | None = None
    octopi: str | None = None
    version: str | None = None  # the product version a fresh card runs (the profile reads it)
    python: str | None = None
    url: str | None = None
    sha256: str | None = None
    sha256_url: str | None = None
    md5_url: str | None = None
    rpi_imager_json: str | None = None
    extract_size: int | None = None
    extract_sha256: str | None = None
    virtual: VirtualRecipe | None = None

    def shipped_version(self, virtual: bool) -> str | None:
        """The product version a fresh card of this image runs (the virtual recipe's there)."""
        if virtual and self.virtual:
            return self.virtual.version
        return self.version


def default_catalog_path() -> Path:
    env = os.environ.get(CATALOG_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "catalog.yaml"


@dataclass(frozen=True)
class Catalog:
    path: Path
    images: dict[str, CatalogImage]

    def get(self, name: str) -> CatalogImage:
        try:
            return self.images[name]
        except KeyError:
            raise ConfigError(
                f"no image {name!r} in the catalogue (known: {', '.join(sorted(self.images))})",
                where=str(self.path),
            ) from None


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    source = Path(path) if path else default_catalog_path()
    try:
        text = source.read_text()
    except OSError as e:
        raise ConfigError(
            f"cannot read the image catalogue: {e.strerror}", where=str(source)
        ) from None
    data = parse_yaml(text, str(source))
    problems = validate(data, "catalog")
    if problems:
        raise ValidationErrors(str(source), problems)
    images = {}
    for name, entry in data["images"].items():
        virtual = entry.pop("virtual", None)
        images[name] = CatalogImage(
            name=name,
            virtual=VirtualRecipe(**virtual) if virtual else None,
            **entry,
        )
    return Catalog(source, images)
