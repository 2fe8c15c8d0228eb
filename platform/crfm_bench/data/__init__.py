"""Volumes, dataset sources (synthetic, IXI, BraTS, BIDS), manifests and fingerprints."""
