"""weightlab plugin: layer-wise optimal-brain-surgeon pruning — Optimal Brain Compression /
ExactOBS (Frantar & Alistarh, NeurIPS 2022) and its scalable form SparseGPT (Frantar &
Alistarh, ICML 2023), unstructured or N:M.

- :mod:`.pattern`: the ``pattern`` parameter (``unstructured`` or ``N:M``) and target splits.
- :mod:`.layers`: a conv/linear layer as weight matrices and the rows of its inputs
  (im2col), and the layer Hessians H = 2XXᵀ/n from calibration data.
- :mod:`.solver`: the per-layer solvers — SparseGPT's lazy-batch OBS with the Cholesky factor
  of H⁻¹, and ExactOBS (greedy one-weight-at-a-time OBS per row).
- :mod:`.pruner`: the ``obs`` pruner (sequential, layer by layer).
"""
