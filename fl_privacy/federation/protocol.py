"""The message keys both Flower sides agree on: the server writes them, the ClientApp reads them."""

CONFIG_KEY = "fl-privacy-config"
"""A train message's config entry holding the run's resolved config (JSON)."""
PARTITION_KEY = "partition-id"
"""Set in a train message when SuperNodes host several clients: the partition to train."""
