"""The ``onnxg`` command line. Nothing imports this package but the entry point."""
