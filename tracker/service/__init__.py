"""The long-running service around the consumers: its assembly, the deadline listener, the
sweeper and the periodic jobs' base."""
