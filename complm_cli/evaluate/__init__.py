"""`complm eval`: datasets, metrics, and comparison runs of the modes."""
