"""Amaranth 0.5 hardware of the DFSQ datapath, generated from golden/spec.py, and its flow.

Components (:mod:`hw.units`, one Amaranth ``wiring.Component`` family per module): :mod:`hw.units.decoder` (code
layout, point table), :mod:`hw.units.shift_add` (the shift-add multiplier), :mod:`hw.units.mac` (``dfsq_mac``),
:mod:`hw.units.engine` (``dfsq_engine``), :mod:`hw.units.mean_unit` (``dfsq_mean_unit``),
:mod:`hw.units.uniform_engine` and :mod:`hw.units.baselines` (the uniform baselines), :mod:`hw.units.arith`
(bound-tracked widths, balanced adder trees), :mod:`hw.units.pipeline` (the engines' stall/accumulate skeleton).

Flow (this package's top level): :mod:`hw.tops` (the registry of generated tops: component, spec type, file stem,
sidecar and testbench of each), :mod:`hw.generate` (Verilog + JSON sidecar CLI), :mod:`hw.synth`,
:mod:`hw.harness` and :mod:`hw.report` (area and fmax, docs/hardware.md), :mod:`hw.throughput` (cycles and frames
per second), :mod:`hw.iso_psnr` (designs of equal PSNR), :mod:`hw.stream` (engine beats and port packing) and
:mod:`hw.testbench` (Amaranth-simulator drivers).
"""
