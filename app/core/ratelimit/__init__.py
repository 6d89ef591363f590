"""Per-client rate limits, in the worker or shared through Redis."""
