"""Flower ServerApp and the honest-but-curious FedAvg strategy (thin glue over fl_privacy)."""
