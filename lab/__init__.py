"""The lab: the command-line interface, the experiment runner and the demo."""
