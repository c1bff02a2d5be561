"""The embedded AWS endpoint: moto's server on loopback, with one gap closed.

moto 5 sends no S3 notification when a delete on a versioned bucket creates a delete marker
(AWS sends `s3:ObjectRemoved:DeleteMarkerCreated`). Our landing bucket is versioned, so without
this every `dataharvest remove` would go unnoticed locally. The patch adds the event; it
touches moto's backend class in this process only.
"""

from __future__ import annotations

from typing import Any


def _notify_delete_markers() -> None:
    from moto.s3 import models, notifications

    original = models.S3Backend.delete_object
    if getattr(original, "dataharvest_patched", False):
        return

    def delete_object(
        self: Any,
        bucket_name: str,
        key_name: str,
        version_id: str | None = None,
        bypass: bool = False,
    ) -> Any:
        bucket = self.get_bucket(bucket_name)
        current = None
        if bucket.is_versioned and version_id is None:
            current = bucket.keys.get(key_name)
        result = original(self, bucket_name, key_name, version_id=version_id, bypass=bypass)
        if result[0] and isinstance(current, models.FakeKey):
            notifications.send_event(
                self.account_id,
                notifications.S3NotificationEvent.OBJECT_REMOVED_DELETE_MARKER_CREATED_EVENT,
                bucket,
                current,
            )
        return result

    delete_object.dataharvest_patched = True  # type: ignore[attr-defined]
    models.S3Backend.delete_object = delete_object


def start_moto_server(port: int):
    """Start moto's server on 127.0.0.1:port in this process; returns it (call .stop())."""
    from moto.server import ThreadedMotoServer

    _notify_delete_markers()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server
