"""The HTTP API: dependencies, schemas and one router module per resource."""
