"""Everything that talks to MongoDB: the connection (``connection``, ``inmemory``), status
changes (``transitions``), claims and leases (``claims``), and executions (``executions``)."""
