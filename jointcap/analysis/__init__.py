"""Analysis: what a model says about images (explain), figures (viz), study summaries and metric tables (report)."""
