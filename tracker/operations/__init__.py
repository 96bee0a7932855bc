"""What operators do to tracked work, for the CLI, the HTTP API and the console alike."""
