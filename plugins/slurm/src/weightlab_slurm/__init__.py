"""weightlab-slurm: independent steps as SLURM job arrays, submitted with submitit."""
