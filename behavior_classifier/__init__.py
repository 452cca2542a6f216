"""behavior_classifier package (work in progress)."""
