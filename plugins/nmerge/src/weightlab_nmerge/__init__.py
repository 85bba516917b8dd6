"""weightlab plugin: N-model merging with cycle-consistent alignments — MergeMany (Ainsworth et
al. 2023) and C2M3 (Crisostomi et al. 2024) as matchers."""
