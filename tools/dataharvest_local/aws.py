"""The embedded AWS endpoint: moto's server on loopback, with five gaps closed.

1. moto 5 sends no S3 notification when a delete on a versioned bucket creates a delete marker
   (AWS sends `s3:ObjectRemoved:DeleteMarkerCreated`). Our landing bucket is versioned, so
   without this every `dataharvest remove` would go unnoticed locally.
2. moto's SQS queue costs time proportional to the messages it holds on every send: each send
   reads `Queue.attributes` four times, which counts the visible, in-flight and delayed
   messages (two clock reads per message), and a FIFO queue then scans every held message for
   the deduplication id. At the ~120,000 messages one large drop publishes, one send took
   seconds. The patch computes the counts only when they are asked for and keeps a FIFO
   queue's deduplication ids in an index that, like AWS, remembers an id for five minutes even
   after its message was deleted.
3. moto's server lists its own package folder on disk (a stat per service) twice for every
   request it routes; the folder does not change while the server runs, so it is listed once.
4. moto's DynamoDB Query on a table's own key builds and sorts a list of every item of the
   table, then keeps those of the asked partition: ~0.3-0.6 s per Query at 30,000 items, which
   was nearly all of the Data API's status route. moto already stores a table's items by hash
   key (`Table.items[hash][range]`), so the patch has that Query read its partition alone and
   leaves the rest of moto's Query (key conditions, filters, Limit, pagination, order,
   projections, counts) as it is. Queries on a secondary index keep moto's path (no table of
   ours has one).
   What then remained of a 30-item Query (~50 ms) was nearly all moto's shape-driven response
   serializer, which matches each attribute value against the ten members of DynamoDB's
   AttributeValue through name aliases. The JSON form of an attribute value is its type
   letter and value, so DynamoDB's attribute values are written out directly (blobs base64,
   as moto writes them); any other value, or one of a form not known here, goes moto's way.
5. Browser uploads (the console's presigned POST): moto's server answers every request with
   `Access-Control-Allow-Origin: *` whatever the bucket's CORS rules say, and its POST Object
   answer has neither the new version's id nor the bucket's CORS headers. S3 sends both, and
   only what the bucket's rules allow. The global header is off, so the landing bucket's CORS
   rule (serverless.yml) decides as in AWS, and a POST answers with `x-amz-version-id` and
   the CORS headers of the rule matching the request's Origin.

The patches touch moto's classes in this process only.
"""

from __future__ import annotations

import functools
import threading
import time
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


# AWS: "any messages sent with the same message deduplication ID are accepted successfully but
# aren't delivered during the 5-minute deduplication interval".
DEDUPLICATION_INTERVAL_MS = 5 * 60 * 1000

_MESSAGE_COUNTS = {
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
}
_deferring_counts = threading.local()


class _Deferred:
    """Stands in for a message count while moto builds a queue's attribute dict."""

    def __init__(self, name: str) -> None:
        self.name = name


class LazyQueueAttributes(dict):
    """A queue's attributes whose message counts are computed when read, not when built.

    moto reads `attributes.get("ContentBasedDeduplication")` several times per send; only
    GetQueueAttributes reads the counts.
    """

    def __init__(self, queue: Any, attributes: dict[str, Any]) -> None:
        super().__init__(attributes)
        self._queue = queue

    def __getitem__(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if isinstance(value, _Deferred):
            return getattr(self._queue, value.name)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        return default

    def __iter__(self):  # a non-dict iterator makes dict(self) go through __getitem__
        return iter(list(dict.keys(self)))

    def items(self):  # type: ignore[override]
        return [(key, self[key]) for key in self]

    def values(self):  # type: ignore[override]
        return [self[key] for key in self]

    def copy(self) -> dict[str, Any]:
        return dict(self.items())

    def __eq__(self, other: object) -> bool:
        return dict(self.items()) == other

    __hash__ = None  # type: ignore[assignment]


def _fast_sqs_queues() -> None:
    from moto.sqs import models

    queue_class = models.Queue
    if getattr(queue_class.add_message, "dataharvest_patched", False):
        return
    original_add = queue_class.add_message
    original_attributes = queue_class.attributes.fget

    for name in _MESSAGE_COUNTS:
        count = getattr(queue_class, name).fget

        def deferred_count(self: Any, _count=count, _name=name) -> Any:
            if getattr(_deferring_counts, "active", False):
                return _Deferred(_name)
            return _count(self)

        setattr(queue_class, name, property(deferred_count))

    def attributes(self: Any) -> dict[str, Any]:
        _deferring_counts.active = True
        try:
            built = original_attributes(self)
        finally:
            _deferring_counts.active = False
        return LazyQueueAttributes(self, built)

    def add_message(self: Any, message: Any) -> None:
        # moto's own Lambda event source mappings hang off add_message; we run none, but
        # should someone, moto's path stays intact.
        if not self.fifo_queue or not message.deduplication_id or self.lambda_event_source_mappings:
            return original_add(self, message)
        with self._messages_lock:
            seen = self.__dict__.setdefault("dataharvest_deduplication", {})
            now = message.sent_timestamp or time.time() * 1000
            first = seen.get(message.deduplication_id)
            if first is not None and now - first < DEDUPLICATION_INTERVAL_MS:
                return
            if len(seen) > 1024 and len(seen) % 1024 == 0:
                # Forget expired ids now and then, so the index stays as large as 5 minutes.
                expired = [k for k, sent in seen.items() if now - sent >= DEDUPLICATION_INTERVAL_MS]
                for key in expired:
                    del seen[key]
            seen[message.deduplication_id] = now
            self._messages.append(message)
            self._messages_lock.notify_all()

    slow_clock = models.unix_time_millis

    def unix_time_millis(dt: Any = None) -> float:
        # moto's clock builds two datetimes per call and is read twice per held message when
        # counting; the wall clock in milliseconds is the same value, ~10x cheaper.
        return time.time() * 1000.0 if dt is None else slow_clock(dt)

    add_message.dataharvest_patched = True  # type: ignore[attr-defined]
    queue_class.add_message = add_message
    queue_class.attributes = property(attributes)
    models.unix_time_millis = unix_time_millis
    # Building the attribute dict converts ~18 names per read, ~3 ms per send: a pure function.
    models.camelcase_to_underscores = functools.lru_cache(maxsize=256)(
        models.camelcase_to_underscores
    )


def _list_moto_modules_once() -> None:
    from moto import backends

    if getattr(backends.list_of_moto_modules, "dataharvest_patched", False):
        return
    modules = tuple(backends.list_of_moto_modules())

    def list_of_moto_modules() -> tuple[str, ...]:
        return modules

    list_of_moto_modules.dataharvest_patched = True  # type: ignore[attr-defined]
    backends.list_of_moto_modules = list_of_moto_modules


_partition = threading.local()


def _query_reads_one_partition() -> None:
    """Table.query without an index reads `Table.items[hash_key]` instead of every item.

    moto's query calls `self.all_items()` once, on its table-key path only, and keeps the items
    whose hash key equals the asked one. While a patched query runs, this thread's
    `all_items()` of that table returns that partition alone, ordered as moto orders it (by
    hash key, then range key). DynamoType's hash and equality agree (both on type and cast
    value), so the dictionary lookup finds exactly the items moto's comparison keeps."""
    from moto.dynamodb.models.table import Table

    original_query = Table.query
    if getattr(original_query, "dataharvest_patched", False):
        return
    original_all_items = Table.all_items

    def all_items(self: Any) -> list[Any]:
        hint = getattr(_partition, "hint", None)
        if hint is None or hint[0] is not self:
            return original_all_items(self)
        stored = self.items.get(hint[1])  # .get: items is a defaultdict; do not add a key
        if stored is None:
            return []
        if self.range_key_attr:
            return sorted(stored.values(), key=lambda item: item.range_key)
        return [stored]

    @functools.wraps(original_query)
    def query(
        self: Any,
        hash_key: Any,
        range_comparison: Any,
        range_objs: Any,
        limit: Any,
        exclusive_start_key: Any,
        scan_index_forward: Any,
        projection_expressions: Any,
        index_name: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        outer = getattr(_partition, "hint", None)
        _partition.hint = (self, hash_key) if index_name is None and hash_key is not None else None
        try:
            return original_query(
                self,
                hash_key,
                range_comparison,
                range_objs,
                limit,
                exclusive_start_key,
                scan_index_forward,
                projection_expressions,
                index_name,
                *args,
                **kwargs,
            )
        finally:
            _partition.hint = outer

    query.dataharvest_patched = True  # type: ignore[attr-defined]
    query.dataharvest_original = original_query  # type: ignore[attr-defined]
    Table.all_items = all_items
    Table.query = query


_posted = threading.local()


def _s3_post_answers_like_s3() -> None:
    from moto.moto_server import werkzeug_app
    from moto.s3 import models, responses

    # Read when moto builds each service's app, i.e. after this runs (server start).
    werkzeug_app.DISABLE_GLOBAL_CORS = True
    original_post = responses.S3Response._bucket_response_post
    if getattr(original_post, "dataharvest_patched", False):
        return
    original_put = models.S3Backend.put_object

    def put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        key = original_put(self, *args, **kwargs)
        if getattr(_posted, "watching", False):
            _posted.key = key
        return key

    def bucket_response_post(self: Any, request: Any, bucket_name: str) -> Any:
        # One request per thread: the key moto's POST stores is the one put_object returns
        # on this thread while it runs (a POST that deletes keys stores none).
        _posted.watching, _posted.key = True, None
        try:
            status, headers, body = original_post(self, request, bucket_name)
            stored = _posted.key
        finally:
            _posted.watching, _posted.key = False, None
        headers = {**self._get_cors_headers_other(), **headers}
        if stored is not None and stored.version_id not in (None, "null"):
            headers["x-amz-version-id"] = stored.version_id
        return status, headers, body

    bucket_response_post.dataharvest_patched = True  # type: ignore[attr-defined]
    models.S3Backend.put_object = put_object
    responses.S3Response._bucket_response_post = bucket_response_post


_STRING_KINDS = frozenset({"S", "N"})
_STRING_SET_KINDS = frozenset({"SS", "NS"})
_BOOLEAN_KINDS = frozenset({"BOOL", "NULL"})


def attribute_value_json(value: Any, base64: Any) -> dict[str, Any] | None:
    """DynamoDB's JSON of one attribute value as moto holds it ({type: value}, blobs as bytes),
    as moto's serializer writes it; None for a form this does not know (moto's way then)."""
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    for kind, member in value.items():
        if member is None:
            continue
        if kind in _STRING_KINDS:
            out[kind] = str(member)
        elif kind in _BOOLEAN_KINDS:
            out[kind] = member
        elif kind in _STRING_SET_KINDS:
            out[kind] = [str(v) for v in member]
        elif kind == "B":
            out[kind] = base64(member)
        elif kind == "BS":
            out[kind] = [base64(v) for v in member]
        elif kind == "M":
            entries = {}
            for name, inner in member.items():
                written = attribute_value_json(inner, base64)
                if written is None:
                    return None
                entries[name] = written
            out[kind] = entries
        elif kind == "L":
            elements = []
            for inner in member:
                written = attribute_value_json(inner, base64)
                if written is None:
                    return None
                elements.append(written)
            out[kind] = elements
        else:
            return None
    return out


def _fast_attribute_values() -> None:
    from moto.core import serialize

    serializer = serialize.BaseJSONSerializer
    original = serializer._serialize_type_structure
    if getattr(original, "dataharvest_patched", False):
        return

    def serialize_type_structure(
        self: Any, serialized: Any, value: Any, shape: Any, key: str
    ) -> None:
        if (
            key
            and shape.name == "AttributeValue"
            and self.operation_model.service_model.service_name == "dynamodb"
        ):
            written = attribute_value_json(value, self._base64)
            if written is not None:
                self._default_serialize(serialized, written, shape, key)
                return
        original(self, serialized, value, shape, key)

    serialize_type_structure.dataharvest_patched = True  # type: ignore[attr-defined]
    serialize_type_structure.dataharvest_original = original  # type: ignore[attr-defined]
    serializer._serialize_type_structure = serialize_type_structure


def patch_moto() -> None:
    """Apply every patch above to moto's classes in this process (idempotent)."""
    _notify_delete_markers()
    _fast_sqs_queues()
    _list_moto_modules_once()
    _query_reads_one_partition()
    _fast_attribute_values()
    _s3_post_answers_like_s3()


def start_moto_server(port: int):
    """Start moto's server on 127.0.0.1:port in this process; returns it (call .stop())."""
    from moto.server import ThreadedMotoServer

    patch_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server
