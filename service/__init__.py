"""Background onnxg servers: their records (``records``), start, health and stop (``daemon``,
``procs``), and the HTTP client of onnxg's own API (``client``, for ``onnxg bench --server``)."""
