"""Flower ClientApp: local training plus the defense pipeline (thin glue over fl_privacy)."""
