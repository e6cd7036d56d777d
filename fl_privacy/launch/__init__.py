"""Starting federations: in process, on Flower's Simulation Engine (Ray) or a SuperLink, and the ``fl-privacy``
command line. The only place in ``fl_privacy`` that imports ``flwr`` or the Flower glue (``strategies``,
``clients``); the experiment runner gets ``runs.run_inprocess`` handed in."""
