"""What a run reports: the scheme report and scheme.json, charts, TensorBoard events."""
