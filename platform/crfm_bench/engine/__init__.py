"""Training (Ray Train), tuning (Ray Tune), sliding-window inference and evaluation."""
