"""Live option analytics, computed once on the server: Black-76 per leg and the chain's aggregates."""
