"""BFM 2009 3DMM in the Deep3DFaceRecon layout (80 identity, 64 expression bases), as Real3D-Portrait uses it.

Facts implemented (see `../shared/docs/official-architecture.md` §4.1, §4.2, §5.2):

* Files. `BFM_model_front.mat` (35,709 vertices in the official release) holds `meanshape` [1,3N],
  `idBase` [3N,80], `exBase` [3N,64], `meantex` [1,3N], `texBase` [3N,80], `tri` [F,3] (1-based),
  `point_buf` [N,8] (1-based face ids, padded with F+1), `keypoints` [1,68] (1-based lm68 vertex ids),
  `frontmask2_idx`, `tri_mask2`, `skinmask`. When it is absent it is built from the raw Basel files exactly
  like Deep3DFaceRecon's `transferBFM09` (`convert_bfm09`): bases scaled by their standard deviations,
  divided by 1e5 (micrometres -> decimetres), truncated to 80 id / 64 exp / 80 tex, and restricted to the
  front vertices through `BFM_front_idx.mat` (front -> 53,215 expression-model vertices) and
  `BFM_exp_idx.mat` (expression-model -> 53,490 BFM vertices). The expression mean of `Exp_Pca.bin` is
  ignored, as in the official conversion.
* Geometry. `S = mean + idBase @ id + exBase @ exp`, reshaped [N,3]; the mean shape is recentred (its
  vertex mean subtracted). Pose: `R = compute_rotation(euler) = (Rz Ry Rx)^T` with euler = (pitch x,
  yaw y, roll z) in radians, points transform as row vectors `p @ R + trans`. Camera: `z_cam = 10 - z`
  (camera on +z looking at the origin), pinhole f = 1015, c = 112 in a 224 px frame, x right, y *up*.
  Axis conventions of the rotation (tested): a +90 deg yaw maps the model's +z (the face's front) to +x
  (image right) and +x to -z; a +90 deg pitch maps +z to -y (nose down in the image); a +90 deg roll
  maps +x to +y (counter-clockwise in the y-up frame).
* Keypoints. lm68 = `keypoints - 1` (what `bfm.py` uses). mediapipe-468 =
  `index_mp468_from_mesh35709.npy` with negative (unmatched) entries clamped to vertex 0.
* The `Face3DHelper` quirk: in lm68 mode the official helper indexes vertices with the stored 1-based
  `keypoints` *without* subtracting 1, so every "lm68" landmark it returns is the BFM vertex after the
  right one. The torso keypoints (`reconstruct_lm2d`) and the A2M `mouth_amp` training target are computed
  through that helper, so a checkpoint-faithful path must copy it: `reconstruct_lm2d_official`,
  `mouth_amp_target(quirk=True)`. `reconstruct_lm2d(quirk=False)` is the corrected variant.

Derived helpers when the official files are absent (the official ones are used when present, looked up
in the BFM folder and in its parent, where the official repo keeps them):

* NCC code (`ncc_code.npy`, [3,N]): the mean shape's x, y, z, each min-max normalised over the vertices
  to [0,1] (translation-invariant, so recentring does not matter).
* Eye faces (`bfm_{left,right}_eye_faces.npy`, 1-based face ids): in the frontal x-y projection of the
  mean shape, the six lm68 contour points of an eye (correct indices: 36-41 and 42-47) form a polygon;
  it is scaled by 1.15 about its centroid (so the eyelid rim is included) and every face whose three
  vertices lie inside it is an eye face. "left" is the eye on the image left in a frontal view (lm68
  36-41, the subject's right eye); "right" is lm68 42-47. The official files' naming is not documented.
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from real3d.errors import DependencyError, InputError
from real3d.geometry import euler_to_matrix

log = logging.getLogger(__name__)

FRONT_MAT = "BFM_model_front.mat"
MP468_INDEX = "index_mp468_from_mesh35709.npy"
NCC_CODE = "ncc_code.npy"
EYE_FACES = ("bfm_left_eye_faces.npy", "bfm_right_eye_faces.npy")
RAW_FILES = (
    "01_MorphableModel.mat",
    "Exp_Pca.bin",
    "std_exp.txt",
    "BFM_front_idx.mat",
    "BFM_exp_idx.mat",
    "facemodel_info.mat",
)
N_ID, N_EXP, N_TEX = 80, 64, 80

_RELEASE = (
    "the official Real3D-Portrait release ships it in `deep_3drecon/BFM/` (README: download the BFM "
    "folder and unzip it there)"
)
WHERE = {
    FRONT_MAT: _RELEASE + "; it can also be built from the raw files " + ", ".join(RAW_FILES),
    MP468_INDEX: _RELEASE,
    "01_MorphableModel.mat": "the Basel Face Model 2009 (faces.dmi.unibas.ch, registration required); "
    "Deep3DFaceRecon_pytorch 'Prepare prerequisite models' describes the BFM folder",
    "Exp_Pca.bin": "the expression basis of Guo et al. (github.com/Juyong/3DFace); see Deep3DFaceRecon_pytorch "
    "'Prepare prerequisite models'",
    "std_exp.txt": "microsoft/Deep3DFaceReconstruction `BFM/` (also in the Real3D-Portrait BFM download)",
    "BFM_front_idx.mat": "microsoft/Deep3DFaceReconstruction `BFM/` (also in the Real3D-Portrait BFM download)",
    "BFM_exp_idx.mat": "microsoft/Deep3DFaceReconstruction `BFM/` (also in the Real3D-Portrait BFM download)",
    "facemodel_info.mat": "microsoft/Deep3DFaceReconstruction `BFM/` (also in the Real3D-Portrait BFM download)",
}

# lm68 groups (0-based positions in the 68-point list)
LM68_EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
LM68_UPPER_LIP_MID, LM68_LOWER_LIP_MID = 51, 57


def _missing(path: Path, what: str = "BFM file") -> DependencyError:
    return DependencyError(
        f"{what} '{path.name}' not found in {path.parent}; {WHERE.get(path.name, _RELEASE)}. "
        f"Pass the folder with --bfm DIR."
    )


def _loadmat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except (OSError, ValueError) as e:
        raise InputError(
            f"cannot read MATLAB file {path}: {e}; re-download it ({WHERE.get(path.name, _RELEASE)})"
        ) from e


def _field(mat: dict, name: str, path: Path) -> np.ndarray:
    if name not in mat:
        raise InputError(
            f"{path} has no field '{name}'; it is not the official file ({WHERE.get(path.name, _RELEASE)})"
        )
    return np.asarray(mat[name])


@dataclass
class BFMData:
    """The contents of `BFM_model_front.mat` in numpy (N vertices, F faces). Indices as stored (1-based)
    except where noted."""

    meanshape: np.ndarray
    """[1,3N] float32 mean shape in decimetres, not recentred (x0,y0,z0,x1,...)."""
    id_base: np.ndarray
    """[3N,80] identity basis."""
    exp_base: np.ndarray
    """[3N,64] expression basis."""
    meantex: np.ndarray
    """[1,3N] mean albedo, 0-255."""
    tex_base: np.ndarray
    """[3N,80] albedo basis."""
    tri: np.ndarray
    """[F,3] 1-based vertex ids."""
    point_buf: np.ndarray
    """[N,8] 1-based face ids around each vertex, padded with F+1."""
    keypoints: np.ndarray
    """[68] 1-based lm68 vertex ids (as stored: the +1 quirk of `Face3DHelper` indexes with these directly)."""
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    """Other fields (`frontmask2_idx`, `tri_mask2`, `skinmask`), as stored."""

    @property
    def n_vertices(self) -> int:
        return self.meanshape.size // 3

    @property
    def faces(self) -> np.ndarray:
        """[F,3] int64 0-based triangles."""
        return self.tri.astype(np.int64) - 1

    def to_mat_dict(self) -> dict[str, np.ndarray]:
        """Field dict in the layout `transferBFM09` saves."""
        return {
            "meanshape": self.meanshape,
            "meantex": self.meantex,
            "idBase": self.id_base,
            "exBase": self.exp_base,
            "texBase": self.tex_base,
            "tri": self.tri,
            "point_buf": self.point_buf,
            "keypoints": self.keypoints.reshape(1, -1),
            **self.extra,
        }

    @classmethod
    def from_mat_dict(cls, mat: dict, path: Path) -> BFMData:
        meanshape = _field(mat, "meanshape", path).reshape(1, -1)
        n = meanshape.size // 3
        id_base = _field(mat, "idBase", path)
        exp_base = _field(mat, "exBase", path)
        if meanshape.size != 3 * n or id_base.shape != (3 * n, N_ID) or exp_base.shape != (3 * n, N_EXP):
            raise InputError(
                f"{path}: expected meanshape [1,3N], idBase [3N,{N_ID}], exBase [3N,{N_EXP}], got "
                f"{meanshape.shape}, {id_base.shape}, {exp_base.shape}"
            )
        keypoints = _field(mat, "keypoints", path).reshape(-1)
        if keypoints.size != 68:
            raise InputError(f"{path}: 'keypoints' must hold 68 vertex ids, got {keypoints.size}")
        extra = {k: np.asarray(mat[k]) for k in ("frontmask2_idx", "tri_mask2", "skinmask") if k in mat}
        return cls(
            meanshape=meanshape,
            id_base=id_base,
            exp_base=exp_base,
            meantex=_field(mat, "meantex", path).reshape(1, -1),
            tex_base=_field(mat, "texBase", path),
            tri=_field(mat, "tri", path),
            point_buf=_field(mat, "point_buf", path),
            keypoints=keypoints,
            extra=extra,
        )


def _read_exp_pca(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`Exp_Pca.bin`: int32 K, float32 mean [3V], float32 basis [K,3V] (row-major). Returns (mean [3V], basis
    [3V,K]). The official reader hard-codes V = 53,215; here V is derived from the file size (and checked)."""
    raw = path.read_bytes()
    if len(raw) < 8:
        raise InputError(f"{path} is truncated ({len(raw)} bytes); re-download it ({WHERE['Exp_Pca.bin']})")
    k = int(np.frombuffer(raw[:4], dtype="<i4")[0])
    floats = (len(raw) - 4) // 4
    if k <= 0 or (len(raw) - 4) % 4 or floats % (3 * (k + 1)):
        raise InputError(
            f"{path}: size {len(raw)} bytes does not fit K={k} components of 3V floats; "
            f"the file is corrupt ({WHERE['Exp_Pca.bin']})"
        )
    n3 = floats // (k + 1)
    values = array("f")
    values.frombytes(raw[4:])
    data = np.asarray(values, dtype=np.float32)
    mean, basis = data[:n3], data[n3:].reshape(k, n3)  # K x 3V
    return mean, basis.T


def convert_bfm09(bfm_dir: Path) -> BFMData:
    """Build `BFM_model_front.mat`'s contents from the raw Basel files (the `transferBFM09` recipe)."""
    bfm_dir = Path(bfm_dir)
    for name in RAW_FILES:
        if not (bfm_dir / name).is_file():
            raise _missing(bfm_dir / name)
    log.info("building the BFM front model from the raw BFM09 files in %s", bfm_dir)
    p_mm = bfm_dir / "01_MorphableModel.mat"
    mm = _loadmat(p_mm)
    shape_pc, shape_ev, shape_mu = (_field(mm, k, p_mm) for k in ("shapePC", "shapeEV", "shapeMU"))
    tex_pc, tex_ev, tex_mu = (_field(mm, k, p_mm) for k in ("texPC", "texEV", "texMU"))
    _, exp_pc = _read_exp_pca(bfm_dir / "Exp_Pca.bin")
    exp_ev = np.loadtxt(bfm_dir / "std_exp.txt")  # float64, as the official np.loadtxt

    # bases scaled by their standard deviations, micrometres -> decimetres, truncated
    id_base = (shape_pc * shape_ev.reshape(1, -1) / 1e5)[:, :N_ID]
    exp_base = (exp_pc * exp_ev.reshape(1, -1) / 1e5)[:, :N_EXP]
    tex_base = (tex_pc * tex_ev.reshape(1, -1))[:, :N_TEX]

    p_front, p_exp = bfm_dir / "BFM_front_idx.mat", bfm_dir / "BFM_exp_idx.mat"
    front_in_exp = _field(_loadmat(p_front), "idx", p_front).astype(np.int32).reshape(-1) - 1  # front -> exp model
    exp_in_full = _field(_loadmat(p_exp), "trimIndex", p_exp).astype(np.int32).reshape(-1) - 1  # exp -> BFM09
    if front_in_exp.max(initial=-1) >= exp_in_full.size or front_in_exp.min(initial=0) < 0:
        raise InputError(f"{p_front}: vertex ids exceed the {exp_in_full.size} expression-model vertices")
    front_in_full = exp_in_full[front_in_exp]
    n_full, n_exp = shape_mu.size // 3, exp_pc.shape[0] // 3
    if front_in_full.max(initial=-1) >= n_full or exp_in_full.max(initial=-1) >= n_full or front_in_exp.max() >= n_exp:
        raise InputError(
            f"the BFM index files do not match the models ({n_full} BFM09 vertices, {n_exp} "
            f"expression-model vertices); the files come from different releases"
        )

    def take(base: np.ndarray, rows: np.ndarray) -> np.ndarray:  # [3V,K] -> [3n,K] on vertex ids
        k = base.shape[1]
        return base.reshape(-1, 3, k)[rows].reshape(-1, k)

    def take_mean(mu: np.ndarray, rows: np.ndarray) -> np.ndarray:  # [3V] -> [1,3n]
        return mu.reshape(-1, 3)[rows].reshape(1, -1)

    p_info = bfm_dir / "facemodel_info.mat"
    info = _loadmat(p_info)
    extra = {k: _field(info, k, p_info) for k in ("frontmask2_idx", "skinmask", "tri_mask2")}
    return BFMData(
        meanshape=take_mean(shape_mu / 1e5, front_in_full),
        id_base=take(id_base, front_in_full),
        exp_base=take(exp_base, front_in_exp),
        meantex=take_mean(tex_mu, front_in_full),
        tex_base=take(tex_base, front_in_full),
        tri=_field(info, "tri", p_info),
        point_buf=_field(info, "point_buf", p_info),
        keypoints=_field(info, "keypoints", p_info).reshape(-1),
        extra=extra,
    )


def write_front_mat(data: BFMData, path: Path) -> Path:
    """Save `data` as a `BFM_model_front.mat` (the fields `transferBFM09` writes)."""
    from scipy.io import savemat

    path = Path(path)
    savemat(str(path), data.to_mat_dict())
    return path


@dataclass(frozen=True)
class BFMFiles:
    """Locator of a user-supplied BFM folder (`--bfm DIR`). Does no I/O beyond `is_file` until asked."""

    root: Path

    @classmethod
    def locate(cls, bfm_dir: str | Path) -> BFMFiles:
        root = Path(bfm_dir).expanduser()
        if not root.is_dir():
            raise DependencyError(f"BFM folder {root} does not exist; {_RELEASE}. Pass it with --bfm DIR.")
        if not (root / FRONT_MAT).is_file():
            missing = [n for n in RAW_FILES if not (root / n).is_file()]
            if missing:
                raise DependencyError(
                    f"BFM folder {root} has neither '{FRONT_MAT}' nor all raw files to build it (missing: "
                    f"{', '.join(missing)}). {FRONT_MAT}: {WHERE[FRONT_MAT]}. "
                    + " ".join(f"'{n}': {WHERE[n]}." for n in missing)
                )
        return cls(root)

    @property
    def front_mat(self) -> Path:
        return self.root / FRONT_MAT

    def load_front(self) -> BFMData:
        """`BFM_model_front.mat` if present, else converted in memory from the raw files."""
        if self.front_mat.is_file():
            return BFMData.from_mat_dict(_loadmat(self.front_mat), self.front_mat)
        return convert_bfm09(self.root)

    def mp468_index(self, n_vertices: int | None = None) -> np.ndarray:
        """[468] int64 vertex ids of the mediapipe landmarks; negative = no matching vertex."""
        path = self.root / MP468_INDEX
        if not path.is_file():
            raise _missing(path)
        try:
            idx = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"{path} is not a plain numpy integer array: {e}") from e
        idx = np.asarray(idx).reshape(-1)
        if idx.size != 468 or not np.issubdtype(idx.dtype, np.integer):
            raise InputError(f"{path}: expected 468 integer vertex ids, got {idx.size} of {idx.dtype}")
        if n_vertices is not None and idx.max() >= n_vertices:
            raise InputError(f"{path}: vertex id {idx.max()} is out of range for a {n_vertices}-vertex BFM")
        return idx.astype(np.int64)

    def _helper(self, name: str) -> Path | None:
        for d in (self.root, self.root.parent):
            if (d / name).is_file():
                return d / name
        return None

    def ncc_code(self, data: BFMData) -> np.ndarray:
        """[N,3] float32 normalised-coordinate colours (official `ncc_code.npy` if present, else derived)."""
        path = self._helper(NCC_CODE)
        if path is not None:
            ncc = np.load(path, allow_pickle=False)
            if ncc.shape == (3, data.n_vertices):
                return np.ascontiguousarray(ncc.T, dtype=np.float32)
            log.warning("%s has shape %s, not [3,%d]; deriving the NCC code instead", path, ncc.shape, data.n_vertices)
        return derive_ncc_code(data.meanshape)

    def eye_faces(self, data: BFMData) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) int64 0-based face ids of the eye regions (official npy if present, else derived)."""
        paths = [self._helper(n) for n in EYE_FACES]
        if all(p is not None for p in paths):
            out = tuple(np.load(p, allow_pickle=False).reshape(-1).astype(np.int64) - 1 for p in paths)
            n_faces = data.tri.shape[0]
            if all(o.size and o.min() >= 0 and o.max() < n_faces for o in out):
                return out  # type: ignore[return-value]
            log.warning("eye-face files do not match this BFM (%d faces); deriving them instead", n_faces)
        return derive_eye_faces(data)


def derive_ncc_code(meanshape: np.ndarray) -> np.ndarray:
    """[N,3] float32: each coordinate of the mean shape min-max normalised over the vertices to [0,1]."""
    v = np.asarray(meanshape, dtype=np.float64).reshape(-1, 3)
    lo, hi = v.min(0), v.max(0)
    return ((v - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test: poly [K,2], pts [M,2] -> [M] bool."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < xint)).sum(1) % 2 == 1


def derive_eye_faces(data: BFMData, dilate: float = 1.15) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) 0-based faces inside the lm68 eye contours (frontal projection, contour scaled by `dilate`)."""
    v = data.meanshape.reshape(-1, 3).astype(np.float64)
    kp = data.keypoints.astype(np.int64) - 1
    faces = data.faces
    out = []
    for eye in LM68_EYES:
        poly = v[kp[list(eye)], :2]
        c = poly.mean(0)
        poly = c + dilate * (poly - c)
        inside_v = _inside(poly, v[:, :2])
        out.append(np.nonzero(inside_v[faces].all(1))[0].astype(np.int64))
    return out[0], out[1]


@dataclass(frozen=True)
class ParametricFaceConfig:
    """Camera and model constants of the official `ParametricFaceModel` / `Face3DHelper`."""

    focal: float = 1015.0
    """Focal length in pixels of the 224 px 3DMM frame."""
    center: float = 112.0
    """Principal point (both axes), i.e. a 224 x 224 frame."""
    camera_distance: float = 10.0
    """Camera on the +z axis at this distance: `z_cam = camera_distance - z`."""
    recenter: bool = True
    """Subtract the vertex mean from the mean shape (official default)."""

    @property
    def image_size(self) -> float:
        return 2.0 * self.center


def compute_rotation(euler: torch.Tensor) -> torch.Tensor:
    """euler [B,3] = (pitch x, yaw y, roll z) radians -> [B,3,3] `(Rz Ry Rx)^T`, applied as `p @ R`."""
    return euler_to_matrix(euler).transpose(-1, -2)


class ParametricFace(nn.Module):
    """The BFM face model: geometry, pose, projection and keypoints. Device/dtype follow `.to()`.

    Buffers: `mean_shape` [N,3] (recentred), `id_base` [N,3,80], `exp_base` [N,3,64], `faces` [F,3] (0-based),
    keypoint bases for `lm68` (correct), `lm68_official` (+1 quirk) and `mp468` ([K,3] mean, [K,3,80], [K,3,64]).
    """

    KEYPOINT_SETS = ("lm68", "lm68_official", "mp468")

    def __init__(
        self,
        data: BFMData,
        mp468_index: np.ndarray | None = None,
        config: ParametricFaceConfig = ParametricFaceConfig(),
    ) -> None:
        super().__init__()
        self.config = config
        n = data.n_vertices
        mean = data.meanshape.reshape(n, 3).astype(np.float32)
        if config.recenter:
            mean = mean - mean.mean(0, keepdims=True)
        self.register_buffer("mean_shape", torch.from_numpy(mean))  # N x 3
        self.register_buffer("id_base", torch.from_numpy(data.id_base.astype(np.float32).reshape(n, 3, N_ID)))
        self.register_buffer("exp_base", torch.from_numpy(data.exp_base.astype(np.float32).reshape(n, 3, N_EXP)))
        self.register_buffer("faces", torch.from_numpy(data.faces))  # F x 3
        stored = data.keypoints.astype(np.int64)
        if stored.min() < 1 or stored.max() > n:
            raise InputError(
                f"BFM keypoints must be 1-based vertex ids in [1,{n}], got [{stored.min()},{stored.max()}]"
            )
        self.keypoint_ids = {"lm68": stored - 1}
        if stored.max() < n:  # the quirk reads vertex `stored`; only impossible if a keypoint is the last vertex
            self.keypoint_ids["lm68_official"] = stored
        if mp468_index is not None:
            mp = np.asarray(mp468_index, dtype=np.int64).copy()
            mp[mp < 0] = 0  # unmatched points read vertex 0 (their loss weight is 0)
            self.keypoint_ids["mp468"] = mp
        for name, ids in self.keypoint_ids.items():
            t = torch.from_numpy(ids)
            self.register_buffer(f"{name}_mean", self.mean_shape[t].clone())  # K x 3
            self.register_buffer(f"{name}_id_base", self.id_base[t].clone())  # K x 3 x 80
            self.register_buffer(f"{name}_exp_base", self.exp_base[t].clone())  # K x 3 x 64

    @classmethod
    def from_dir(
        cls, bfm_dir: str | Path, config: ParametricFaceConfig = ParametricFaceConfig(), with_mediapipe: bool = True
    ) -> ParametricFace:
        """Load from a BFM folder (front .mat or raw files; plus the mediapipe index when asked)."""
        files = BFMFiles.locate(bfm_dir)
        data = files.load_front()
        mp = files.mp468_index(data.n_vertices) if with_mediapipe else None
        return cls(data, mp, config)

    @property
    def n_vertices(self) -> int:
        return self.mean_shape.shape[0]

    # ---- geometry
    def vertices(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
        """id [B,80], exp [B,64] -> [B,N,3] canonical (unposed) vertices."""
        return self.linear_shape(self.mean_shape, self.id_base, self.exp_base, id_coeff, exp_coeff)

    @staticmethod
    def linear_shape(mean, id_base, exp_base, id_coeff, exp_coeff) -> torch.Tensor:
        id_part = torch.einsum("kdc,bc->bkd", id_base, id_coeff)  # B x K x 3
        exp_part = torch.einsum("kdc,bc->bkd", exp_base, exp_coeff)  # B x K x 3
        return id_part + exp_part + mean

    def keypoints_3d(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor, which: str = "lm68") -> torch.Tensor:
        """Canonical keypoints [B,K,3] of a keypoint set (`lm68`, `lm68_official`, `mp468`)."""
        if which not in self.keypoint_ids:
            raise InputError(f"keypoint set '{which}' is not available (have {sorted(self.keypoint_ids)})")
        return self.linear_shape(
            getattr(self, f"{which}_mean"),
            getattr(self, f"{which}_id_base"),
            getattr(self, f"{which}_exp_base"),
            id_coeff,
            exp_coeff,
        )

    compute_rotation = staticmethod(compute_rotation)

    def to_camera(self, points: torch.Tensor, euler: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """[B,K,3] model points -> camera space: `p @ R + trans`, then `z = camera_distance - z`."""
        p = points @ compute_rotation(euler) + trans[:, None, :]  # B x K x 3
        return torch.cat([p[..., :2], self.config.camera_distance - p[..., 2:]], -1)

    def project(self, cam_points: torch.Tensor) -> torch.Tensor:
        """[B,K,3] camera points -> [B,K,2] pixels of the 224 frame, x right, y up (official `to_image`)."""
        f, c = self.config.focal, self.config.center
        z = cam_points[..., 2:]
        return torch.cat([f * cam_points[..., 0:1] / z + c, f * cam_points[..., 1:2] / z + c], -1)

    def posed_vertices(self, id_coeff, exp_coeff, euler, trans) -> torch.Tensor:
        """[B,N,3] camera-space vertices (official `compute_face_vertex`)."""
        return self.to_camera(self.vertices(id_coeff, exp_coeff), euler, trans)

    def project_keypoints(self, id_coeff, exp_coeff, euler, trans, which: str = "mp468") -> torch.Tensor:
        """[B,K,2] projected keypoints, y up, 224 px (official `compute_for_landmark_fit`)."""
        return self.project(self.to_camera(self.keypoints_3d(id_coeff, exp_coeff, which), euler, trans))

    def reconstruct_lm2d(self, id_coeff, exp_coeff, euler, trans, quirk: bool = False) -> torch.Tensor:
        """[B,68,2] lm68 in [0,1] image coordinates with y down (`Face3DHelper.reconstruct_lm2d`)."""
        which = "lm68_official" if quirk else "lm68"
        uv = self.project_keypoints(id_coeff, exp_coeff, euler, trans, which)
        size = self.config.image_size
        return torch.stack([uv[..., 0], size - uv[..., 1]], -1) / size

    def reconstruct_lm2d_official(self, id_coeff, exp_coeff, euler, trans) -> torch.Tensor:
        """As the official torso-keypoint path computes it: with the +1 vertex-index quirk."""
        return self.reconstruct_lm2d(id_coeff, exp_coeff, euler, trans, quirk=True)

    def mouth_amp_target(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor, quirk: bool = True) -> torch.Tensor:
        """A2M `mouth_amp` condition of a clip: the 0.9 quantile over frames of |lm51 - lm57|_1 on the canonical
        lm68 3-D landmarks (`Face3DHelper` lm68, so the +1 quirk applies by default).

        id_coeff [T,80] or [1,80], exp_coeff [T,64] -> scalar tensor (decimetres)."""
        if exp_coeff.ndim != 2 or exp_coeff.shape[0] == 0:
            raise InputError(f"exp_coeff must be [T,64] with T >= 1, got {tuple(exp_coeff.shape)}")
        id_coeff = id_coeff.expand(exp_coeff.shape[0], -1)
        lm = self.keypoints_3d(id_coeff, exp_coeff, "lm68_official" if quirk else "lm68")  # T x 68 x 3
        d = (lm[:, LM68_UPPER_LIP_MID] - lm[:, LM68_LOWER_LIP_MID]).abs().sum(-1)  # T
        return torch.quantile(d, 0.9)
