"""Amaranth components of the DFSQ datapath and its baselines (no flow code: generation, synthesis and reports live
in :mod:`hw`'s top level; each generated top is registered once in :mod:`hw.tops`)."""
