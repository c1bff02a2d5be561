"""Persistence: one S3 object version -> raw rows, rejections and the metastore item."""

from dataharvest.persistence.load import load_upload

__all__ = ["load_upload"]
