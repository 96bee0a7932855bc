"""A MongoDB stand-in that speaks the wire protocol, for fault tests and benchmarks.

What it models: a single-member replica set primary reporting MongoDB 7.0 (wire version 21),
so the real PyMongo client connects, uses sessions and retries writes as it would in
production; OP_MSG commands (OP_QUERY only for the handshake); the CRUD, index and catalog
commands the tracker issues, with MongoDB's reply shapes and error codes; a practical
subset of the query language, update operators, pipeline updates, aggregation stages and
expressions (``$$NOW`` is the server's clock); unique, compound and partial unique indexes
enforced like a server (E11000 DuplicateKey); the ``failCommand`` fail point with the real
``configureFailPoint`` API; and ``standinSilence`` / ``standinStats`` / ``standinReset``.

What it does not model: a storage engine, journaling or durability (everything lives in
memory and dies with the process), replication and elections (write concerns are accepted
and ignored), authentication, TLS, compression, transactions, TTL expiry, collation, text
and geo queries, positional updates, ``$lookup`` / ``$facet`` / ``$out``, and any
server-side cost: hash indexes make indexed lookups constant time, so timings measure the
client and the tracker, never MongoDB.

Start it with ``python -m tests.mongo_standin --port 0`` (prints ``listening HOST:PORT``),
``StandIn()`` (that process, as a context manager) or ``StandInServer()`` /
``serve()`` on the running event loop; connect to
``mongodb://HOST:PORT/?directConnection=true``.
"""

from tests.mongo_standin.process import StandIn
from tests.mongo_standin.server import StandInServer, serve

__all__ = ["StandIn", "StandInServer", "serve"]
