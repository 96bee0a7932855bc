"""The RabbitMQ adapters of the transport-free core: the aio-pika transport, ``Worker`` and
``Publisher``, and the synchronous pika adapter (``tracker.rabbit.pika``). Both declare the
same topology (``topology``) and pass one contract test suite."""
