import pytest

from real3d.assets import NeuralAssets, resolve
from real3d.errors import DependencyError


def test_explicit_env_and_config_file_order(tmp_path, monkeypatch):
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'bfm = "{c}"\n')
    monkeypatch.setenv("REAL3D_CONFIG", str(cfg))
    monkeypatch.delenv("REAL3D_BFM", raising=False)
    assert resolve("bfm") == c
    monkeypatch.setenv("REAL3D_BFM", str(b))
    assert resolve("bfm") == b
    assert resolve("bfm", a) == a


def test_missing_asset_names_flag_env_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("REAL3D_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("REAL3D_HUBERT", raising=False)
    with pytest.raises(DependencyError, match=r"--hubert.*REAL3D_HUBERT.*hubert-large-ls960-ft"):
        resolve("hubert")
    assert resolve("segmenter_model", required=False) is None
    with pytest.raises(DependencyError, match="does not exist"):
        resolve("bfm", tmp_path / "nope")


def test_locate_without_hubert_for_video_driving(tmp_path, monkeypatch):
    monkeypatch.setenv("REAL3D_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("REAL3D_HUBERT", raising=False)
    monkeypatch.delenv("REAL3D_SEGMENTER", raising=False)
    assets = NeuralAssets.locate(checkpoints=tmp_path, bfm=tmp_path, need_hubert=False)
    assert assets.hubert is None and assets.segmenter_model is None
