"""Starting federations: in process, on Flower's Simulation Engine (Ray) or a SuperLink.
The only place in ``fl_privacy`` that imports ``flwr``."""
