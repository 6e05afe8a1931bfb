"""Prices: the offers a stage may run on (PriceCatalog) and what moving data costs (EgressModel)."""

from __future__ import annotations

from skyflow.catalog.egress import LOCAL, CloudEgress, EgressModel, EgressRule, Tiers
from skyflow.catalog.offers import Offer, PriceCatalog


def load_catalog(catalog_dir: str | None = None) -> PriceCatalog:
    """The catalog in ``catalog_dir``, ``$SKYFLOW_CATALOG_DIR``, ``~/.sky/catalogs/v8``, or the default.

    Parsed files are cached (in process and under ~/.cache/skyflow), so repeat loads are fast.
    """
    from skyflow.catalog.sources import read_catalog

    return read_catalog(catalog_dir)


def load_egress(path: str | None = None, catalog_dir: str | None = None) -> EgressModel:
    """List prices per cloud, overridden by ``path`` or ``catalog_dir/egress.yaml`` when given."""
    from skyflow.catalog.sources import read_egress

    return read_egress(path, catalog_dir)


__all__ = ["LOCAL", "CloudEgress", "EgressModel", "EgressRule", "Offer", "PriceCatalog", "Tiers",
           "load_catalog", "load_egress"]
