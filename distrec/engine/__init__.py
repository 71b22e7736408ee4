"""The training engine: session set-up (session.py), the loop (loop.py), evaluation runs (runs.py)."""
