"""The gateway's quotes on a real broker (NATS) for its API replicas: Dhan's frames as they were applied,
fills from outside the feed, and snapshots on request (issue 20, decision 0008)."""
