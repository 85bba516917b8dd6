"""weightlab plugin: MuDSC (Xu et al., CVPR 2024) — matching on weight- and activation-space
similarity together, attention heads matched as blocks."""
