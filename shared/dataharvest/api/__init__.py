"""The Data API: authentication, roles, routes and the local HTTP front (docs/SPEC.md §API)."""
