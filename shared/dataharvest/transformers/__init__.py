"""Transformers: each is its SQL (a module here) plus a registry entry in its service folder;
`runtime` gives all of them the same locking, replacement, audit and metastore behaviour."""
