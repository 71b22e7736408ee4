"""Dataset bundles: schema (torch-free, shared with spark_jobs), readers and loaders."""
