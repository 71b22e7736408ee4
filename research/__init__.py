"""Paper-analysis probes and derived-bundle tools (not part of the ``distrec`` package).

Run each as ``python -m research.<name>`` from the repository root; see research/README.md.
"""
