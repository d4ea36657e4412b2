"""Background onnxg servers: their records, start, health and stop (``daemon``, ``procs``), and
the HTTP client of onnxg's own API (``client``, used by ``onnxg bench --server``)."""
