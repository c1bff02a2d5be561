"""Snapshot deltas (docs/SPEC.md §7): full table exports in, ordered INSERT / UPDATE / DELETE
changes out (change log in PostgreSQL, published to a Kinesis stream), applied downstream into
`replica.<table>` by services/snapshot_applier."""
