"""Prefect flows over the byu library: orchestration only, every task calls a ``byu`` function."""
