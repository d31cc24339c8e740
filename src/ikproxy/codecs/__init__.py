"""Sans-I/O wire codecs: bytes in, events out; events in, bytes out.

`ikproxy.codecs.sse` speaks Server-Sent Events (the WHATWG event stream) and
`ikproxy.codecs.ndjson` speaks newline-delimited JSON. Neither does any I/O,
imports a framework or needs an event loop, so both can be tested exhaustively
and reused anywhere.
"""
