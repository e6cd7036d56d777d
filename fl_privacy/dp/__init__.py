"""Differential privacy that holds for the mechanism that runs.

``accounting``: client- and sample-level epsilon (Opacus RDP; the relation and sampling are
Flower's ``NeighboringRelation`` / ``SamplingMethod`` vocabulary). ``guarantee``: which
mechanism a config runs, its checks before round 1 and the block every report prints.
``release``: what a client may send (buffers, metrics), the server's central noise and
DP-SGD steps. ``audit``: canary-based empirical epsilon.
"""
