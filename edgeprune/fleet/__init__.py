"""The fleet: federated statistics on Flower (host and board side; the core never imports this).

`statistics` turns a board's one data pass into sums and back (no Flower needed); `client_app`
and `server_app` are the Flower apps that move and add them (`pip install edgeprune[fleet]`).
"""
