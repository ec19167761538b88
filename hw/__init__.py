"""Amaranth 0.5 hardware of the DFSQ datapath, generated from golden/spec.py.

Modules: :mod:`hw.decoder` (code layout, point table), :mod:`hw.shift_add` (the shift-add multiplier),
:mod:`hw.mac` (``dfsq_mac``), :mod:`hw.engine` (``dfsq_engine``), :mod:`hw.baselines` (uniform multiplier MACs),
:mod:`hw.arith` (bound-tracked widths, balanced adder trees), :mod:`hw.stream` (engine beats and port packing),
:mod:`hw.testbench` (Amaranth-simulator drivers), :mod:`hw.generate` (Verilog + JSON sidecar CLI),
:mod:`hw.synth`, :mod:`hw.harness` and :mod:`hw.report` (docs/hardware.md).
"""
