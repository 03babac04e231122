"""Command-line interface: parses arguments, calls one stage, prints. No logic of its own."""
