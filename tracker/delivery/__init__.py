"""What happens to one delivery, in the order it happens: read it (``envelope``), decide
(``decision``), run the handler under a lease (``processor``, ``leases``), record the outcome
(``outcomes``), settle (``settle``). Free of any transport."""
