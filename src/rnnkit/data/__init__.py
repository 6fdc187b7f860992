"""Data on the local machine for the built-in tasks."""
