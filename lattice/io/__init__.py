"""Files (layer 4): the HDF5 ensemble and its manifest, atomic writes, checkpoints, and model
directories. Nothing here runs a sampler."""
