"""Speed of `real3d.render.rasterize` (+ interpolate / sample_texture) at 512x512.

Meshes: a MediaPipe-sized face (a 22x22 vertex ellipsoid cap, 882 triangles, covering ~330x400 px,
turned 35 degrees so it occludes itself) and a BFM-sized mesh (a closed ellipsoid, ~70k triangles,
front and back both rasterized unless culled).

    python benchmarks/bench_rasterize.py [--repeats 50] [--size 512] [--keep-freed-memory]

--keep-freed-memory calls glibc's mallopt so that freed blocks stay mapped: every numpy temporary
otherwise costs fresh page faults, which dominated the time on the development VM (see the report).
Reported times are the minimum over the repeats (the least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import ctypes
import time

import numpy as np

from real3d.precision import machine_summary
from real3d.render import interpolate, rasterize, sample_texture


def ellipsoid_mesh(
    n_lat: int, n_lon: int, size: int, lat_max: float, lon_max: float, yaw_deg: float, closed: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Lat/long grid on an ellipsoid, rotated by yaw and placed in a size x size image (x right, y down).

    Returns verts [V,3] (x, y pixels, z depth) and faces [F,3], front faces counter-clockwise on screen.
    """
    lat = np.linspace(-lat_max, lat_max, n_lat)
    lon = np.linspace(-lon_max, lon_max, n_lon, endpoint=not closed)
    la, lo = np.meshgrid(lat, lon, indexing="ij")  # n_lat x n_lon
    radii = np.array([0.32, 0.40, 0.30]) * size
    p = np.stack([np.cos(la) * np.sin(lo), np.sin(la), -np.cos(la) * np.cos(lo)], -1) * radii  # n_lat x n_lon x 3
    yaw = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    p = p.reshape(-1, 3) @ rot.T
    verts = np.concatenate([p[:, :2] + size / 2, p[:, 2:]], axis=1)
    cols = n_lon if closed else n_lon - 1
    i, j = np.meshgrid(np.arange(n_lat - 1), np.arange(cols), indexing="ij")
    a = i * n_lon + j
    b = i * n_lon + (j + 1) % n_lon
    c, d = a + n_lon, b + n_lon
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    return verts, faces


def time_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times) * 1e3)


def keep_freed_memory() -> None:
    """glibc: serve large blocks from the heap and never trim it (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 32 * 1024 * 1024)
    libc.mallopt(-1, 1024 * 1024 * 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--keep-freed-memory", action="store_true", help="mallopt: no trimming/mmap of freed blocks")
    args = parser.parse_args()
    print(machine_summary(), flush=True)  # the CPU capability each figure below comes from
    if args.keep_freed_memory:
        keep_freed_memory()
    s = args.size
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(s, s, 3), dtype=np.uint8)

    cases = {
        "face 882 tris (turned cap)": ellipsoid_mesh(22, 22, s, 1.2, 1.6, 35.0, closed=False),
        "BFM-size ~70k tris (closed)": ellipsoid_mesh(188, 188, s, 1.45, np.pi, 35.0, closed=True),
    }
    print(f"image {s}x{s}, min of {args.repeats} runs, ms per frame, keep_freed_memory={args.keep_freed_memory}")
    for name, (verts, faces) in cases.items():
        uv = verts[:, :2].copy()
        for cull in (False, True):
            frags = rasterize(verts, faces, s, s, cull_backfaces=cull)
            t_r = time_ms(lambda: rasterize(verts, faces, s, s, cull_backfaces=cull), args.repeats)
            t_i = time_ms(lambda: interpolate(frags, verts), args.repeats)
            t_t = time_ms(lambda: sample_texture(texture, uv, frags), args.repeats)
            print(
                f"{name:30s} F={len(faces):6d} cull={cull!s:5s} covered={frags.mask.sum():6d}px  "
                f"rasterize {t_r:6.2f}  interpolate(3ch) {t_i:6.2f}  sample_texture {t_t:6.2f}"
            )


if __name__ == "__main__":
    main()
