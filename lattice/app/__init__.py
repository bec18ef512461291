"""The app (layer 6): the ``lattice`` command, plots and reports. The only layer that imports
rich or matplotlib, and the only one that sets global JAX configuration (x64)."""
