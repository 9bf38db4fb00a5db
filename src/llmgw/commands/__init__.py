"""The ``llmgw`` subcommands, one module each; ``llmgw.cli`` assembles them."""
