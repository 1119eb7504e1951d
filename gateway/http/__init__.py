"""HTTP on both sides of the gateway: the server protocol that reads clients' requests
(``protocol.py``, with its deadline tick ``deadlines.py``) and the pooled client that talks to
the instances (``upstream.py``). No routing, auth or policy lives here."""
