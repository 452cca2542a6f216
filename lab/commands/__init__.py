"""The `countdown-lab` subcommands, one module per group; `lab.cli` collects them."""
