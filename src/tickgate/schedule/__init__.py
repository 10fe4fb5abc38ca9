"""Trading calendar and the end-of-day jobs (per exchange session)."""
