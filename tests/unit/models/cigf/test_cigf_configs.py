"""Every CIGF config file loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from distrec.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[4] / "configs" / "cigf").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path: Path) -> None:
    cfg = load_config("cigf", str(path))
    cfg.model.validate()
    assert cfg.model.embedding_dim > 0 and cfg.graph.layers >= 1


def test_bad_switch_is_an_error_naming_the_key() -> None:
    cfg = load_config("cigf", None, ["model.head=ple"])
    with pytest.raises(ValueError, match="model.head"):
        cfg.model.validate()
