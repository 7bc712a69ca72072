import cv2
import numpy as np
import pytest

from real3d.backends.mesh import MeshRenderer, close_eyes
from real3d.face import topology as topo
from real3d.face.portrait import analyze_portrait
from real3d.motion.track import MotionTrack


@pytest.fixture(scope="module")
def renderer():
    from skimage import data

    return MeshRenderer(analyze_portrait(data.astronaut()))


def _track(n=1):
    return MotionTrack.still(n, 25)


def test_still_track_reproduces_the_source(renderer):
    out = renderer.render(_track(), 0)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(float) - renderer.p.image).mean() < 2.0


def test_pose_applied_then_removed_round_trip(renderer):
    tr = _track(3)
    tr.euler[1] = (0.1, 0.35, -0.05)
    tr.trans[1] = (0.2, -0.1, 0.1)
    a = renderer.render(tr, 0)
    b = renderer.render(tr, 1)
    c = renderer.render(tr, 2)
    assert np.abs(b.astype(float) - a).mean() > 5  # the pose did something
    assert (a == c).all()  # and removing it restores the frame exactly
    # the posed landmarks follow the documented similarity: yaw turns the nose toward the image side
    lm0 = renderer.target_landmarks(tr, 0)
    lm1 = renderer.target_landmarks(tr, 1)
    iod = np.linalg.norm(lm0[263] - lm0[33])
    shift = lm1[topo.NOSE_TIP, 0] - lm0[topo.NOSE_TIP, 0] - 0.2 * iod
    assert shift < -2  # positive yaw moves the nose tip (nearest point) toward -x


def test_background_stays_still_far_from_the_person(renderer):
    tr = _track(2)
    tr.euler[1] = (0.0, 0.3, 0.0)
    tr.trans[1] = (0.3, 0.0, 0.0)
    out = renderer.render(tr, 1).astype(float)
    bg = renderer.p.person_mask < 0.01
    far = bg & (np.arange(512)[None, :] > 470)  # right edge strip of background
    assert far.sum() > 100
    assert np.abs(out[far] - renderer.background[far]).mean() < 3


def test_blink_closes_the_lids_without_moving_the_head(renderer):
    tr = _track(2)
    tr.blink[1] = 1.0
    lm0, lm1 = renderer.target_landmarks(tr, 0), renderer.target_landmarks(tr, 1)
    up, lo = list(topo.RIGHT_EYE_UPPER), list(topo.RIGHT_EYE_LOWER)
    assert np.abs(lm1[up] - lm1[lo]).max() < 1e-6
    rigid = list(topo.RIGID)
    assert np.abs(lm1[rigid] - lm0[rigid]).max() < 1e-9  # pose untouched (lid points are not rigid points)
    eye = renderer.render(tr, 1)[
        lm0[up, 1].min().astype(int) : lm0[lo, 1].max().astype(int) + 1,
        lm0[up + lo, 0].min().astype(int) : lm0[up + lo, 0].max().astype(int) + 1,
    ]
    src = renderer.p.image[
        lm0[up, 1].min().astype(int) : lm0[lo, 1].max().astype(int) + 1,
        lm0[up + lo, 0].min().astype(int) : lm0[up + lo, 0].max().astype(int) + 1,
    ]
    assert np.abs(eye.astype(float) - src).mean() > 5


def test_close_eyes_is_partial_for_partial_amounts():
    q = np.zeros((478, 3))
    q[list(topo.RIGHT_EYE_LOWER), 1] = 1.0
    half = close_eyes(q, 0.5)
    gap = half[list(topo.RIGHT_EYE_LOWER), 1] - half[list(topo.RIGHT_EYE_UPPER), 1]
    np.testing.assert_allclose(gap, 0.5)


def test_open_mouth_shows_a_dark_cavity_and_teeth(renderer):
    tr = _track(2)
    canon = renderer.canon
    lower = sorted(set(topo.INNER_LIP_LOWER + topo.OUTER_LIP_LOWER) - set(topo.MOUTH_CORNERS) - {78, 308})
    chin = [i for i in range(468) if canon[i, 1] > canon[topo.LOWER_LIP_MID, 1] + 0.02]
    tr.expression[1, lower, 1] += 0.35
    tr.expression[1, chin, 1] += 0.35
    out = renderer.render(tr, 1)
    lm = renderer.target_landmarks(tr, 1)
    x = int(lm[topo.UPPER_LIP_MID, 0])
    y0, y1 = int(lm[topo.UPPER_LIP_MID, 1]) + 2, int(lm[topo.LOWER_LIP_MID, 1]) - 2
    assert y1 - y0 > 10
    column = out[y0:y1, x - 2 : x + 3].astype(float).mean(1)  # down the middle of the opening
    lum = column.mean(1)
    assert lum.min() < 70  # dark cavity
    assert lum[: max(2, len(lum) // 4)].max() > 150  # bright upper teeth right under the upper lip


def test_gaze_moves_the_iris_inside_a_still_eye(renderer):
    tr = _track(2)
    tr.expression[1, [468, 473], 0] += 0.12  # look to the image right
    lm = renderer.target_landmarks(tr, 0)
    loop = list(topo.RIGHT_EYE_LOOP)
    x0, y0 = np.floor(lm[loop, :2].min(0)).astype(int)
    x1, y1 = np.ceil(lm[loop, :2].max(0)).astype(int)

    def dark_centroid(img):
        g = img[y0:y1, x0:x1].astype(float).mean(2)
        w = np.clip(g.max() - g, 0, None) ** 2
        return (w * np.arange(x1 - x0)[None]).sum() / w.sum()

    a, b = renderer.render(tr, 0), renderer.render(tr, 1)
    assert dark_centroid(b) > dark_centroid(a) + 1.0
    rigid = list(topo.RIGID)
    np.testing.assert_allclose(renderer.target_landmarks(tr, 1)[rigid], lm[rigid])


def test_head_moving_down_reveals_background_not_replicated_edge(renderer):
    """Where the warp samples above the photo, the person is absent (alpha 0): the background shows."""
    from dataclasses import replace

    p = renderer.p
    image = p.image.copy()
    image[:6] = (255, 0, 255)  # a person-coloured top edge that would streak if replicated
    mask = p.person_mask.copy()
    mask[:40, 150:350] = 1.0
    r = MeshRenderer(replace(p, image=image, person_mask=mask))
    tr = _track(2)
    tr.trans[1] = (0.0, 0.6, 0.0)  # head down by 0.6 eye distances
    out = r.render(tr, 1).astype(float)
    top = out[:8, 220:280]
    assert np.abs(top - r.background[:8, 220:280]).mean() < 5
    assert not (np.abs(top - [255, 0, 255]).sum(-1) < 60).any()


def _opened(renderer, jaw: float) -> MotionTrack:
    """A still track whose frame 1 opens the mouth from the audio driver's closed rest pose by `jaw`."""
    from real3d.motion.mouth import JAW, MOUTH_PARAMS, build_rig, closed_mouth, mouth_offsets

    rest = closed_mouth(renderer.canon)
    p = np.zeros((2, len(MOUTH_PARAMS)))
    p[1, JAW] = jaw
    tr = _track(2)
    tr.expression[:] = mouth_offsets(rest, p, build_rig(rest)) + (rest - renderer.canon).astype(np.float32)
    return tr


def test_teeth_pixels_come_from_the_source_where_it_shows_them(renderer):
    """The astronaut's photo shows her upper teeth: in an opening (head still) those pixels are the photo's own,
    and the synthetic teeth of a source without visible teeth are different."""
    from dataclasses import replace

    assert renderer.mouth.shows_teeth
    tr = _opened(renderer, 0.5)
    rest, out = renderer.render(tr, 0), renderer.render(tr, 1).astype(float)
    lm = renderer.target_landmarks(tr, 1)
    opening = np.zeros(out.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(lm[list(topo.INNER_LIP_LOOP), :2]).astype(np.int32)], 1)
    inside = cv2.erode(opening, np.ones((5, 5), np.uint8)) > 0  # clear of the face layer's feathered edge
    teeth = inside & (renderer.mouth.upper_teeth > 0.99)
    assert teeth.sum() > 50
    gap = lm[list(topo.INNER_LIP_LOWER), 1] - lm[list(topo.INNER_LIP_UPPER), 1]
    assert gap.max() > 10
    src = renderer.p.image.astype(float)
    rot, scale, center = renderer.pose(tr, 1)
    jaw_rest = center + scale * (renderer.canon[list(topo.INNER_LIP_UPPER)] @ rot.T)

    def interior(r):  # the mouth interior alone, drawn on an empty canvas
        canvas = np.zeros_like(src, dtype=np.float32)
        r._draw_mouth(canvas, lm, jaw_rest, scale)
        return canvas

    assert np.abs(interior(renderer)[teeth] - src[teeth]).max() < 1e-3
    # in the frame the inside of the upper lip hides the top of the teeth; the rest shows the photo's teeth
    assert np.mean(np.abs(out[teeth] - src[teeth]).mean(1) < 2.0) > 0.6
    # the closed rest shows no teeth at all: the lips meet (in the face frame; the image adds the head's tilt)
    from real3d.motion.mouth import mouth_gap

    assert mouth_gap(renderer.canon + tr.expression[0]) < 1e-5
    assert rest.shape == out.shape
    synthetic = replace(
        renderer.mouth,
        upper_teeth=np.zeros_like(renderer.mouth.upper_teeth),
        lower_teeth=np.zeros_like(renderer.mouth.lower_teeth),
        teeth_fraction=0.0,
    )
    drawn = MeshRenderer.__new__(MeshRenderer)
    drawn.__dict__.update(renderer.__dict__, mouth=synthetic)
    assert np.abs(interior(drawn)[teeth] - src[teeth]).mean() > 4.0


def test_synthetic_mouth_has_teeth_from_a_small_opening_and_a_darker_back(renderer):
    """Without the photo's teeth: upper teeth right under the upper lip from a small opening on, and the
    cavity darker in the middle of a wide opening than next to its lips."""
    from dataclasses import replace

    drawn = MeshRenderer.__new__(MeshRenderer)
    drawn.__dict__.update(renderer.__dict__, mouth=replace(renderer.mouth, teeth_fraction=0.0))
    for jaw in (0.12, 0.8):
        tr = _opened(drawn, jaw)
        out = drawn.render(tr, 1).astype(float)
        lm = drawn.target_landmarks(tr, 1)
        x = int(round(lm[topo.UPPER_LIP_MID, 0]))
        y0, y1 = int(np.ceil(lm[topo.UPPER_LIP_MID, 1])) + 1, int(lm[topo.LOWER_LIP_MID, 1]) - 1
        lum = out[y0:y1, x - 1 : x + 2].mean((1, 2))
        assert len(lum) >= 2 and lum[:2].max() > 150, jaw  # teeth under the upper lip
        if jaw > 0.5:
            middle = lum[len(lum) // 3 : 2 * len(lum) // 3]
            assert middle.min() < 80  # dark back of the mouth


def _pressed(renderer) -> MotionTrack:
    """The audio driver's silent frame: the closed rest pose with the lips pressed together."""
    from real3d.motion.mouth import MOUTH_PARAMS, PRESS, build_rig, closed_mouth, mouth_offsets

    rest = closed_mouth(renderer.canon)
    p = np.zeros((1, len(MOUTH_PARAMS)))
    p[0, PRESS] = 1.0
    tr = _track(1)
    tr.expression[:] = mouth_offsets(rest, p, build_rig(rest)) + (rest - renderer.canon).astype(np.float32)
    return tr


def _mediapipe_opening(image: np.ndarray) -> float:
    """Inner-lip gap / outer-eye-corner distance, as `real3d eval` measures it."""
    from real3d.face.landmarks import FaceAnalyzer

    lm = FaceAnalyzer().detect(image)[0].landmarks
    return float(np.linalg.norm(lm[13, :2] - lm[14, :2]) / np.linalg.norm(lm[33, :2] - lm[263, :2]))


@pytest.fixture(scope="module")
def wide_open_renderer(renderer):
    """A source photographed with its mouth wide open: the astronaut rendered with her jaw dropped."""
    tr = _opened(renderer, 0.6)
    photo = renderer.render(tr, 1)
    return MeshRenderer(analyze_portrait(photo))


@pytest.mark.parametrize("source", ["smile", "wide open"])
def test_silent_lips_of_an_open_mouthed_photo_meet_without_a_seam(source, renderer, wide_open_renderer):
    """At the audio driver's silent rest, a photo with parted lips (the astronaut's toothy smile; the same face
    with its jaw dropped) renders with lips that meet: MediaPipe reads the mouth as closed as real closed mouths
    read (under 0.01), and along the line where the lips meet no pixel is as dark as the photo's mouth inside or as
    bright as its teeth (the lips' inner edge is painted from the lips, not from the photo's opening)."""
    r = renderer if source == "smile" else wide_open_renderer
    assert _mediapipe_opening(r.p.image) > 0.06  # the photo's lips are apart
    tr = _pressed(r)
    out = r.render(tr, 0)
    assert _mediapipe_opening(out) < 0.01
    lm = r.target_landmarks(tr, 0)
    upper, lower = lm[list(topo.INNER_LIP_UPPER), :2], lm[list(topo.INNER_LIP_LOWER), :2]
    line = np.zeros(out.shape[:2], np.uint8)
    for contour in (upper, lower):
        cv2.polylines(line, [np.round(contour).astype(np.int32)], False, 1, 3)
    corners = np.linalg.norm(lm[[78, 308], :2] - lm[[61, 291], :2], axis=1).max()
    x0, x1 = lm[78, 0] + corners, lm[308, 0] - corners  # the middle of the lip line, clear of the corners
    line[:, : int(np.ceil(x0))] = 0
    line[:, int(x1) :] = 0
    lum = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0].astype(float)[line > 0]
    src_lum = cv2.cvtColor(r.p.image, cv2.COLOR_RGB2LAB)[..., 0].astype(float)
    lips = np.zeros(out.shape[:2], np.uint8)
    outer = list(topo.OUTER_LIP_UPPER) + list(topo.OUTER_LIP_LOWER)[::-1]
    cv2.fillPoly(lips, [np.round(r.src_lm[outer, :2]).astype(np.int32)], 1)
    inner = np.zeros_like(lips)
    cv2.fillPoly(inner, [np.round(r.src_lm[list(topo.INNER_LIP_LOOP), :2]).astype(np.int32)], 1)
    lip_lum = src_lum[(lips > 0) & (inner == 0)]
    lo, hi = np.percentile(lip_lum, 2), np.percentile(lip_lum, 98)
    assert lum.size > 50
    assert lum.min() > lo - 12, (lum.min(), lo)  # no dark seam
    assert np.percentile(lum, 90) < hi, (np.percentile(lum, 90), hi)  # no row of teeth (a lip highlight may touch)
