"""The HTTP layer: the app factory (`app`), what wraps every request (`middleware`), how
failures answer (`errors`), who is calling (`auth`), request and response bodies (`schemas`),
one routes module per resource (`routes/`), and the API documentation page (`docs`)."""
