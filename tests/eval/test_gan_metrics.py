"""GAN quality metrics against values computed by hand."""

import numpy as np
import pytest

from leukolens.eval.gan import (
    frechet_distance,
    image_grid,
    kernel_distance,
    memorisation_ratio,
    nearest_distances,
    resize_crops,
)


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    # Same covariance, mean moved by (1, 2, 0): FD = 1 + 4 = 5.
    assert frechet_distance(a, a + np.array([1.0, 2.0, 0.0])) == pytest.approx(5, abs=1e-6)
    # Two 1-D Gaussians with standard deviations 1 and 2: (1 - 2)^2 = 1.
    x = rng.normal(size=(200_000, 1))
    assert frechet_distance(x, 2 * x) == pytest.approx(1, rel=1e-2)
    with pytest.raises(ValueError):
        frechet_distance(a, a[:, :2])


def test_kernel_distance_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    same, _ = kernel_distance(a, b, subsets=10, subset_size=200)
    different, _ = kernel_distance(a, b + 1.5, subsets=10, subset_size=200)
    assert abs(same) < 0.05 and different > 1.0


def test_nearest_distances_and_memorisation_ratio_by_hand():
    references = np.array([[1.0, 0.0], [0.0, 1.0]])
    queries = np.array([[2.0, 0.0], [1.0, 1.0]])
    distances, index = nearest_distances(queries, references)
    assert distances == pytest.approx([0.0, 1 - np.sqrt(0.5)])
    assert index[0] == 0
    assert memorisation_ratio(np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.4, 0.4])) == pytest.approx(0.5)


def test_resize_and_grid():
    crops = np.zeros((3, 8, 8, 3), np.uint8)
    crops[:, :, :, 0] = 200
    resized = resize_crops(crops, 16)
    assert resized.shape == (3, 16, 16, 3) and (resized[..., 0] == 200).all()
    grid = image_grid([crops, crops[:2]], row_titles=["a", "b"], scale=2)
    assert grid.height == 2 * (16 + 2) and grid.width > 3 * 18


def test_frechet_distance_with_fewer_samples_than_features_matches_the_full_formula():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 10)), rng.normal(size=(9, 10)) * 1.5 + 0.3

    sqrtm = pytest.importorskip("scipy.linalg").sqrtm

    def full(a, b):
        cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        mean = a.mean(0) - b.mean(0)
        return float(mean @ mean + np.trace(cov_a + cov_b - 2 * sqrtm(cov_a @ cov_b).real))

    assert frechet_distance(a, b) == pytest.approx(full(a, b), rel=1e-5)
    assert frechet_distance(b, a) == pytest.approx(full(a, b), rel=1e-5)
