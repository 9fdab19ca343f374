"""The HTTP layer: the FastAPI app, who is calling, request and response bodies, routes."""
