"""The HTTP layer: the app factory (`app`), what wraps every request (`middleware`), how
failures answer (`errors`), who is calling (`auth`), one routes module per resource
(`routes/`), and the API documentation page (`docs`). The request and response bodies are
`broker_auth/schemas.py`: the public contract, built by the domain modules too, so it sits
beside them rather than inside this layer (nothing below the HTTP layer imports it)."""
