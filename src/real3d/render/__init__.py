"""Rendering pieces shared by the backends: a z-buffered triangle rasterizer, interpolation, texturing."""

from real3d.render.rasterize import Fragments, interpolate, rasterize, sample_texture, texture_mesh

__all__ = ["Fragments", "interpolate", "rasterize", "sample_texture", "texture_mesh"]
