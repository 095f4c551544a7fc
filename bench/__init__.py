"""sealchat benchmarks: each measurement next to its ceiling, measured in the same run."""
