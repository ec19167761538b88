"""NumPy side (no torch): the single spec of the DFSQ datapath and its bit-accurate integer model."""
