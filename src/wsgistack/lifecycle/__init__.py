"""The local target: processes (start, track, lock, stop), health, and preflight checks."""
