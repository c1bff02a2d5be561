"""Placeholder replaced by the persistence implementation (issue 4)."""


def load_upload(bucket: str, key: str, event_name: str) -> None:
    raise NotImplementedError("persistence is being implemented")
