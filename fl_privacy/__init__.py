"""fl_privacy: measure gradient leakage in federated learning.

Clients train (FedSGD/FedAvg) and post-process their updates with defenses; an
honest-but-curious server aggregates honestly, records the updates of chosen
victims and attacks them; every round leaves a leakage report.
"""

__version__ = "0.1.0"
