"""What the entry scripts share: flags, the error boundary, console output, the start of a run."""
