"""The one experiment pipeline: tasks -> start model -> optional priming -> RL -> judge -> summary and plots."""
