"""Ranking metrics (ranking.py) and Prometheus export (prometheus.py)."""
