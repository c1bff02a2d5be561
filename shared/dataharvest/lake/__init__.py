"""The lake tier: the current version of every raw input and output of a client and date as
Apache Iceberg tables on S3 (export.py), read locally by `dataharvest query` (query.py)."""
