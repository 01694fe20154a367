# Ported from Modal's "Hyperparameter search" example (modal-labs/modal-examples,
# 03_scaling_out/basic_grid_search.py). Changed: `import modal` -> `import nbscale as modal`;
# scikit-learn's k-nearest-neighbours on its digits data set became a small numpy k-NN on a
# generated data set (the same search, without a 30 MB download), so the image installs
# numpy instead of scikit-learn.
# Run with: nbscale run basic_grid_search.py

import nbscale as modal

app = modal.App(
    "example-basic-grid-search",
    image=modal.Image.debian_slim().uv_pip_install("numpy>=2"),
)


def make_blobs(n=300, seed=42):
    """Three noisy clusters in the plane: points and their labels."""
    import random

    rng = random.Random(seed)
    centers = [(0.0, 0.0), (2.5, 1.0), (1.0, 2.5)]
    points, labels = [], []
    for i in range(n):
        label = i % len(centers)
        cx, cy = centers[label]
        points.append((cx + rng.gauss(0, 1.0), cy + rng.gauss(0, 1.0)))
        labels.append(label)
    return points, labels


# Score a k-NN classifier with `k` neighbours on a held-out quarter of the data.
@app.function()
def fit_knn(k):
    import numpy as np

    points, labels = make_blobs()
    X, y = np.array(points), np.array(labels)
    split = len(X) * 3 // 4
    X_train, X_test, y_train, y_test = X[:split], X[split:], y[:split], y[split:]
    distances = ((X_test[:, None, :] - X_train[None, :, :]) ** 2).sum(axis=2)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
    votes = np.array([np.bincount(row, minlength=3).argmax() for row in y_train[nearest]])
    score = float((votes == y_test).mean())
    print("k = %3d, score = %.4f" % (k, score))
    return score, k


@app.local_entrypoint()
def main():
    # the best score and the k that gives it, over a map of every k
    best_score, best_k = max(fit_knn.map(range(1, 40)))
    print("Best k = %3d, score = %.4f" % (best_k, best_score))
