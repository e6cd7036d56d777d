"""The federation core, Flower-free: local updates and defenses, aggregation, recording, run setup
and the message keys both Flower sides share (``protocol``)."""
