"""The embedded local stack: real PostgreSQL, a local AWS endpoint, and an event-source runner
that drives the unchanged Lambda handlers from the services' serverless.yml definitions."""
