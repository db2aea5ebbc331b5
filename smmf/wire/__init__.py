"""The OpenAI API's wire format, written once for the worker (which speaks it) and the client (which reads it).

`routes` names the API's generation routes, `sse` reads and writes event
streams, `errors` builds and reads error bodies, `responses` builds response
and chunk bodies, `retry_after` parses and writes `Retry-After`, and
`load_report` writes and reads the load a worker reports on each response.
"""
