"""Fréchet distance between Gaussians fitted to features, and precision/recall of samples.

Both work on features (rows of a float matrix) in float64 numpy: feature extraction is
the only part that needs an accelerator.

- `frechet_distance`: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982;
  FID is this on Inception pool3 features, Heusel et al. 2017). The trace of the matrix
  square root is computed as the sum of square roots of the eigenvalues of
  S1^(1/2) S2 S1^(1/2), a symmetric PSD matrix with the same spectrum as S1 S2: stable when
  either covariance is singular (fewer samples than features).
- `precision_recall`: improved precision and recall (Kynkäänniemi et al. 2019): each real
  feature vector gets a ball reaching its k-th nearest real neighbour; precision is the
  fraction of samples inside some real ball, recall the fraction of real vectors inside
  some sample ball.
"""

from __future__ import annotations

import numpy as np

MIN_SAMPLES = 10_000  # Fewer samples bias Fréchet distances upward; numbers are not comparable.


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and covariance [D, D] (unbiased, float64) of features [N, D]."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f"need features [N >= 2, D], got shape {f.shape}")
  return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Fréchet (2-Wasserstein) distance squared between N(mu1, sigma1) and N(mu2, sigma2)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
    raise ValueError(f"shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs "
                     f"{s2.shape}")
  r1 = _sqrt_psd(s1)
  eig = np.linalg.eigvalsh(r1 @ ((s2 + s2.T) / 2) @ r1)
  tr_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
  return np.maximum(d, 0.0)


def knn_radii(features, k: int = 3, chunk: int = 1024) -> np.ndarray:
  """Squared distance from each row to its k-th nearest other row: [N]."""
  f = np.asarray(features, np.float32)
  if len(f) <= k:
    raise ValueError(f"need more than k={k} feature vectors, got {len(f)}")
  out = np.empty(len(f), np.float32)
  for i in range(0, len(f), chunk):
    d = _sq_dists(f[i:i + chunk], f)
    out[i:i + chunk] = np.partition(d, k, axis=1)[:, k]  # Index 0 is the row itself.
  return out


def _coverage(points, centres, radii, chunk: int = 1024) -> float:
  """Fraction of `points` within the ball of radius^2 `radii` around some centre."""
  inside = 0
  for i in range(0, len(points), chunk):
    d = _sq_dists(points[i:i + chunk], centres)
    inside += int((d <= radii[None, :]).any(1).sum())
  return inside / len(points)


def precision_recall(real, fake, k: int = 3, real_radii=None) -> tuple[float, float]:
  """Improved precision and recall (Kynkäänniemi et al. 2019) of `fake` against `real`."""
  real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
  real_radii = knn_radii(real, k) if real_radii is None else real_radii
  precision = _coverage(fake, real, real_radii)
  recall = _coverage(real, fake, knn_radii(fake, k))
  return precision, recall
