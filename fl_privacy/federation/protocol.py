"""The message keys both Flower sides agree on: train messages (server -> ClientApp) and their replies."""

CONFIG_KEY = "fl-privacy-config"
"""A train message's config entry holding the run's resolved config (JSON)."""
PARTITION_KEY = "partition-id"
"""Set in a train message when SuperNodes host several clients: the partition to train; a train reply's
metric naming the client that answered."""
NUM_EXAMPLES_KEY = "num-examples"
"""A train reply's metric: examples trained on (absent when withheld under DP); Flower's weighting key."""
TRAIN_LOSS_KEY = "train-loss"
"""A train reply's metric: mean local loss (absent when withheld under DP)."""
PAYLOAD_KEY = "payload-bytes"
"""A train reply's metric: what the update costs on the wire."""
