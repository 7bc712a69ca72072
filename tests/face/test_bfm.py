"""BFM loader (front .mat and raw-file routes), conventions, keypoints and the Face3DHelper +1 quirk."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from real3d.errors import DependencyError, InputError
from real3d.face.bfm import (
    FRONT_MAT,
    MP468_INDEX,
    RAW_FILES,
    BFMFiles,
    ParametricFace,
    compute_rotation,
    convert_bfm09,
    derive_eye_faces,
    write_front_mat,
)
from real3d.face.bfm_synthetic import write_synthetic_bfm


@pytest.fixture(scope="module")
def bfm_dir(tmp_path_factory):
    return write_synthetic_bfm(tmp_path_factory.mktemp("bfm"), n_vertices=800, raw=True)


@pytest.fixture(scope="module")
def face(bfm_dir) -> ParametricFace:
    return ParametricFace.from_dir(bfm_dir)


def _raw_only(bfm_dir, tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    for name in (*RAW_FILES, MP468_INDEX):
        shutil.copy(bfm_dir / name, d / name)
    return d


def test_raw_files_convert_to_the_front_model(bfm_dir):
    front = BFMFiles.locate(bfm_dir).load_front()
    conv = convert_bfm09(bfm_dir)
    for k, tol in [("meanshape", 1e-6), ("id_base", 1e-7), ("exp_base", 1e-7), ("meantex", 1e-4), ("tex_base", 1e-4)]:
        a, b = getattr(front, k), getattr(conv, k)
        assert a.shape == b.shape and a.dtype == b.dtype, k
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=tol, err_msg=k)
    assert front.id_base.dtype == np.float32 and front.exp_base.dtype == np.float64  # official dtypes
    assert front.meanshape.shape == (1, 3 * 800)
    assert front.id_base.shape == (2400, 80) and front.exp_base.shape == (2400, 64)
    for k in ("tri", "point_buf", "keypoints"):
        np.testing.assert_array_equal(getattr(conv, k), getattr(front, k))
    assert set(conv.extra) == {"frontmask2_idx", "tri_mask2", "skinmask"}
    for k, v in front.extra.items():
        np.testing.assert_array_equal(conv.extra[k], v)


def test_raw_only_folder_gives_the_same_model(bfm_dir, face, tmp_path):
    raw = ParametricFace.from_dir(_raw_only(bfm_dir, tmp_path))
    g = torch.Generator().manual_seed(1)
    idc, exp = torch.randn(2, 80, generator=g), torch.randn(2, 64, generator=g)
    torch.testing.assert_close(raw.vertices(idc, exp), face.vertices(idc, exp), atol=1e-5, rtol=1e-5)


def test_write_front_mat_round_trip(bfm_dir, tmp_path):
    conv = convert_bfm09(bfm_dir)
    write_front_mat(conv, tmp_path / FRONT_MAT)
    back = BFMFiles(tmp_path).load_front()
    np.testing.assert_array_equal(back.id_base, conv.id_base)
    np.testing.assert_array_equal(back.keypoints, conv.keypoints)


def test_missing_files_are_named(bfm_dir, tmp_path):
    with pytest.raises(DependencyError, match="does not exist"):
        BFMFiles.locate(tmp_path / "nope")
    with pytest.raises(DependencyError, match=r"BFM_model_front\.mat.*Exp_Pca\.bin"):
        BFMFiles.locate(tmp_path)
    raw = _raw_only(bfm_dir, tmp_path)
    (raw / "Exp_Pca.bin").unlink()
    with pytest.raises(DependencyError, match=r"missing: Exp_Pca\.bin.*3DFace"):
        BFMFiles.locate(raw)
    with pytest.raises(DependencyError, match=r"'Exp_Pca\.bin' not found"):
        convert_bfm09(raw)
    front_only = tmp_path / "front"
    front_only.mkdir()
    shutil.copy(bfm_dir / FRONT_MAT, front_only / FRONT_MAT)
    with pytest.raises(DependencyError, match=r"index_mp468_from_mesh35709\.npy.*Real3D-Portrait"):
        ParametricFace.from_dir(front_only)
    assert ParametricFace.from_dir(front_only, with_mediapipe=False).n_vertices == 800


def test_corrupt_files_raise_input_errors(bfm_dir, tmp_path):
    raw = _raw_only(bfm_dir, tmp_path)
    data = (raw / "Exp_Pca.bin").read_bytes()
    (raw / "Exp_Pca.bin").write_bytes(data[:-4])
    with pytest.raises(InputError, match="corrupt"):
        convert_bfm09(raw)
    np.save(raw / MP468_INDEX, np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="not a plain numpy"):
        BFMFiles(raw).mp468_index()
    np.save(raw / MP468_INDEX, np.arange(10))
    with pytest.raises(InputError, match="468"):
        BFMFiles(raw).mp468_index()


def test_rotation_conventions():
    def rot(x=0.0, y=0.0, z=0.0):
        return compute_rotation(torch.tensor([[x, y, z]], dtype=torch.float64))[0]

    ex, ey, ez = torch.eye(3, dtype=torch.float64)
    yaw = rot(y=math.pi / 2)
    torch.testing.assert_close(ez @ yaw, ex)  # the face's front turns to image right
    torch.testing.assert_close(ex @ yaw, -ez)
    torch.testing.assert_close(ez @ rot(x=math.pi / 2), -ey)  # positive pitch: nose down
    torch.testing.assert_close(ex @ rot(z=math.pi / 2), ey)  # positive roll: counter-clockwise, y up
    # (Rz Ry Rx)^T == scipy's intrinsic ZYX rotation, transposed
    from scipy.spatial.transform import Rotation

    e = np.array([0.3, -0.7, 1.1])
    expect = Rotation.from_euler("ZYX", e[::-1]).as_matrix().T
    np.testing.assert_allclose(rot(*e).numpy(), expect, atol=1e-12)


def test_projection_of_a_known_point(face):
    p = torch.tensor([[[0.1, 0.2, 0.0], [0.0, 0.0, 1.0]]])
    zero = torch.zeros(1, 3)
    uv = face.project(face.to_camera(p, zero, zero))
    torch.testing.assert_close(uv, torch.tensor([[[112 + 1015 * 0.01, 112 + 1015 * 0.02], [112.0, 112.0]]]))
    cam = face.to_camera(p, zero, torch.tensor([[0.0, 0.0, 1.0]]))
    torch.testing.assert_close(cam[0, :, 2], torch.tensor([9.0, 8.0]))  # z_cam = 10 - (z + tz)


def test_mean_shape_is_recentred_and_follows_dtype(face, bfm_dir):
    assert face.mean_shape.mean(0).abs().max() < 1e-6
    raw_mean = BFMFiles(bfm_dir).load_front().meanshape.reshape(-1, 3).mean(0)
    assert np.abs(raw_mean).max() > 0.05  # the stored mean is not centred, so recentring is exercised
    model = ParametricFace.from_dir(bfm_dir).to(torch.float64)
    v = model.vertices(torch.zeros(1, 80, dtype=torch.float64), torch.zeros(1, 64, dtype=torch.float64))
    assert v.dtype == torch.float64 and v.shape == (1, 800, 3)


def test_lm68_quirk_reads_the_next_vertex(face):
    g = torch.Generator().manual_seed(0)
    idc, exp = 0.5 * torch.randn(3, 80, generator=g), 0.5 * torch.randn(3, 64, generator=g)
    euler, trans = 0.2 * torch.randn(3, 3, generator=g), 0.1 * torch.randn(3, 3, generator=g)
    uv = face.project(face.posed_vertices(idc, exp, euler, trans))  # B x N x 2, y up
    full = torch.stack([uv[..., 0], 224 - uv[..., 1]], -1) / 224
    kp = torch.from_numpy(face.keypoint_ids["lm68"])
    official = face.reconstruct_lm2d_official(idc, exp, euler, trans)
    correct = face.reconstruct_lm2d(idc, exp, euler, trans)
    torch.testing.assert_close(correct, full[:, kp], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(official, full[:, kp + 1], atol=1e-5, rtol=1e-5)
    assert (official - correct).abs().amax() > 1e-3  # the two variants really differ
    assert official.min() > 0 and official.max() < 1


def test_mouth_amp_target(face):
    exp = torch.zeros(10, 64)
    exp[:, 0] = torch.linspace(0, 2, 10)  # jaw opening over the clip
    idc = torch.zeros(1, 80)
    v = face.vertices(idc.expand(10, -1), exp)
    kp = face.keypoint_ids["lm68"] + 1  # the quirk
    d = (v[:, kp[51]] - v[:, kp[57]]).abs().sum(-1)
    torch.testing.assert_close(face.mouth_amp_target(idc, exp), torch.quantile(d, 0.9))
    assert face.mouth_amp_target(idc, exp) > face.mouth_amp_target(idc, torch.zeros(3, 64))
    with pytest.raises(InputError):
        face.mouth_amp_target(idc, torch.zeros(0, 64))


def test_mediapipe_keypoints(face, bfm_dir):
    stored = np.load(bfm_dir / MP468_INDEX, allow_pickle=False)
    assert stored.shape == (468,) and (stored == -999).sum() == 8
    ids = face.keypoint_ids["mp468"]
    assert (ids[stored < 0] == 0).all() and (ids[stored >= 0] == stored[stored >= 0]).all()
    v = face.vertices(torch.zeros(1, 80), torch.zeros(1, 64))
    torch.testing.assert_close(face.keypoints_3d(torch.zeros(1, 80), torch.zeros(1, 64), "mp468"), v[:, ids])
    with pytest.raises(InputError, match="keypoint set"):
        face.keypoints_3d(torch.zeros(1, 80), torch.zeros(1, 64), "lm5")


def test_ncc_and_eye_faces(bfm_dir, tmp_path):
    files = BFMFiles.locate(bfm_dir)
    data = files.load_front()
    ncc = files.ncc_code(data)
    assert ncc.shape == (800, 3)
    np.testing.assert_allclose(ncc.min(0), 0, atol=1e-6)
    np.testing.assert_allclose(ncc.max(0), 1, atol=1e-6)
    v = data.meanshape.reshape(-1, 3)
    assert np.argmax(ncc[:, 0]) == np.argmax(v[:, 0]) and np.argmax(ncc[:, 2]) == np.argmax(v[:, 2])

    left, right = derive_eye_faces(data)
    kp = data.keypoints.astype(int) - 1
    for faces, eye in ((left, range(36, 42)), (right, range(42, 48))):
        assert faces.size > 0
        pts = v[data.faces[faces].reshape(-1), :2]
        lm = v[kp[list(eye)], :2]
        lo, hi = lm.min(0), lm.max(0)
        pad = 0.1 * (hi - lo)
        assert (pts >= lo - pad).all() and (pts <= hi + pad).all()
    assert v[data.faces[left].reshape(-1), 0].max() < 0 < v[data.faces[right].reshape(-1), 0].min()

    # official helper files win when present (looked up in the folder, then its parent)
    d = tmp_path / "deep_3drecon" / "BFM"
    d.mkdir(parents=True)
    shutil.copy(bfm_dir / FRONT_MAT, d / FRONT_MAT)
    custom = np.random.default_rng(0).random((3, 800)).astype(np.float32)
    np.save(d.parent / "ncc_code.npy", custom)
    np.save(d.parent / "bfm_left_eye_faces.npy", np.array([1, 2, 3]))
    np.save(d.parent / "bfm_right_eye_faces.npy", np.array([10]))
    f2 = BFMFiles.locate(d)
    np.testing.assert_array_equal(f2.ncc_code(data), custom.T)
    l2, r2 = f2.eye_faces(data)
    np.testing.assert_array_equal(l2, [0, 1, 2])
    np.testing.assert_array_equal(r2, [9])


def test_synthetic_bfm_rejects_tiny_meshes(tmp_path):
    with pytest.raises(ValueError, match="n_vertices"):
        write_synthetic_bfm(tmp_path, n_vertices=100)
