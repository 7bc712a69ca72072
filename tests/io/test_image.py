import numpy as np
import pytest
from PIL import Image

from real3d.errors import InputError
from real3d.io.image import load_image


@pytest.fixture()
def rgb():
    from skimage import data

    return data.astronaut()[::2, ::2].copy()  # 256x256


def test_rgba_is_composited_on_white(tmp_path, rgb):
    a = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    a[:100, :, 3] = 255
    p = tmp_path / "a.png"
    Image.fromarray(a, "RGBA").save(p)
    out = load_image(p)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (out[:100] == rgb[:100]).all()
    assert (out[150:] == 255).all()


def test_grayscale_and_16bit(tmp_path, rgb):
    g = rgb.mean(2).astype(np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (256, 256, 3) and (out[..., 0] == g).all()
    g16 = g.astype(np.uint16) * 257
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out16 = load_image(tmp_path / "g16.png")
    assert np.abs(out16[..., 1].astype(int) - g).max() <= 1


def test_exif_rotation_is_applied_clockwise(tmp_path, rgb):
    stored = rgb[:, :200].copy()  # 256 high, 200 wide
    stored[:40, :40] = (255, 0, 0)  # a red mark in the stored top-left corner
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6  # orientation 6: shown rotated 90 degrees clockwise
    im.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "r.jpg").astype(float)
    assert out.shape[:2] == (200, 256)
    assert np.abs(out - np.rot90(stored, k=-1)).mean() < 4  # clockwise, as a viewer shows it
    assert np.abs(out - np.rot90(stored, k=1)).mean() > 20  # not the other way
    assert out[:40, -40:, 0].mean() > 200 and out[:40, -40:, 1].mean() < 60  # the mark is now top-right


def test_huge_image_is_downscaled(tmp_path):
    big = np.zeros((4100, 3000, 3), np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    out = load_image(tmp_path / "big.png")
    assert max(out.shape[:2]) == 2048 and out.shape[0] > out.shape[1]


def test_spaces_and_non_ascii_path(tmp_path, rgb):
    d = tmp_path / "mes photos é 写真"
    d.mkdir()
    Image.fromarray(rgb).save(d / "portrait ü.jpg")
    assert load_image(d / "portrait ü.jpg").shape == rgb.shape


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00broken"])
def test_corrupt_files_raise_input_error(tmp_path, content):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(InputError, match="cannot read"):
        load_image(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)
