"""weightlab-ray: independent steps as Ray tasks on an existing (or private local) cluster."""
