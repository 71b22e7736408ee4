"""Config loading: every shipped config file loads, overrides apply, bad keys and values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from distrec.config import ConfigError, load_config, parse_overrides
from distrec.models.registry import MODELS, UnknownModelError, get_spec

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((ROOT / "configs").rglob("*.yaml"))


def _model_of(path: Path) -> str:
    # configs/<model>/<dataset>.yaml; tiny test configs are configs/tiny/<model>.yaml
    return path.stem if path.parent.name == "tiny" else path.parent.name


def test_there_are_config_files() -> None:
    assert CONFIG_FILES, "no configs/**/*.yaml found"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_file_loads(path: Path) -> None:
    model = _model_of(path)
    assert model in MODELS, f"{path}: directory names no registered model"
    cfg = load_config(model, str(path))
    assert cfg.model_name == model
    assert cfg.data.bundle, f"{path}: data.bundle must be set"
    assert cfg.run.dir, f"{path}: run.dir must be set"
    assert isinstance(cfg.model, get_spec(model).config_cls)


def _first_config() -> tuple[str, str]:
    path = CONFIG_FILES[0]
    return _model_of(path), str(path)


def test_overrides_are_typed() -> None:
    model, path = _first_config()
    cfg = load_config(
        model, path, ["train.lr=0.5", "train.epochs=3", "eval.ks=[1,2]", "run.resume=true"]
    )
    assert cfg.train.lr == 0.5 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3
    assert cfg.eval.ks == [1, 2]
    assert cfg.run.resume is True


def test_unknown_key_is_named() -> None:
    model, path = _first_config()
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        load_config(model, path, ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"model\.no_such_knob"):
        load_config(model, path, ["model.no_such_knob=1"])


def test_bad_value_is_named() -> None:
    model, path = _first_config()
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int, got 'many'"):
        load_config(model, path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"graph\.mode: 'partial' is not one of"):
        load_config(model, path, ["graph.mode=partial"])
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["train.lr"])


def test_bad_file(tmp_path: Path) -> None:
    model, _ = _first_config()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(model, str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(model, str(tmp_path / "missing.yaml"))


def test_unknown_model_lists_valid_ones() -> None:
    with pytest.raises(UnknownModelError, match="valid models: .*lightgcn"):
        get_spec("nope")
