"""weightlab plugin: Sinkhorn re-basin (Peña et al., CVPR 2023) as a matcher."""
