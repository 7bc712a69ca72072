import numpy as np

from real3d.ramps import smoothstep


def test_smoothstep_is_flat_outside_zero_one_and_symmetric():
    u = np.array([-1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 2.0])
    np.testing.assert_allclose(smoothstep(u), [0.0, 0.0, 0.15625, 0.5, 0.84375, 1.0, 1.0])
    x = np.linspace(0, 1, 11)
    np.testing.assert_allclose(smoothstep(x) + smoothstep(1 - x), 1.0)
