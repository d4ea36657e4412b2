"""One module per endpoint: it decodes the wire format, calls the runtime, encodes the answer."""
