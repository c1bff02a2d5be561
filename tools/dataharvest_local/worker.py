"""A Lambda execution environment for one function: a separate Python process that imports the
service's handler once (cold start) and serves invocations one at a time, like a Lambda
instance. The runner talks to it over a pipe; the handler's own output goes to stderr.

Usage: python -m dataharvest_local.worker SERVICE_DIR MODULE.FUNCTION
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import time
import traceback
import uuid
from dataclasses import dataclass

from dataharvest_local.slsconfig import LOCAL_ACCOUNT_ID

# powertools' batch processor logs each record's exception at debug level, in the order of its
# batchItemFailures; the runner reports them while `dataharvest run` waits (Lambda leaves them
# in the logs).
BATCH_LOGGER = "aws_lambda_powertools.utilities.batch.base"
RECORD_EXCEPTION = re.compile(r"^Record processing exception: <class '([\w.]+)'>:(.*)$", re.S)


class RecordErrors(logging.Handler):
    """The record exceptions of the current invocation, as "Type: message", in order."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = RECORD_EXCEPTION.match(record.getMessage())
        if found:
            self.errors.append(f"{found[1].rsplit('.', 1)[-1]}: {found[2].strip()}")


def _record_id(record: dict) -> str | None:
    if "messageId" in record:
        return record["messageId"]
    return (record.get("dynamodb") or {}).get("SequenceNumber")


def record_errors(result: object, errors: list[str], event: dict | None = None) -> dict[str, str]:
    """Item identifier -> its error, for a partial batch response, or for a batch whose every
    record failed (powertools then raises instead of answering)."""
    if result is None and event is not None:
        records = event.get("Records") or []
        if len(records) != len(errors):
            return {}
        pairs = zip(records, errors, strict=True)
        return {rid: error for r, error in pairs if (rid := _record_id(r))}
    failures = result.get("batchItemFailures") if isinstance(result, dict) else None
    if not failures:
        return {}
    return {
        failure["itemIdentifier"]: error
        for failure, error in zip(failures, errors, strict=False)
        if isinstance(failure, dict) and "itemIdentifier" in failure
    }


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that handlers and powertools read."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_ms: int

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


def main() -> None:
    service_dir, handler_spec = sys.argv[1], sys.argv[2]
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the handler prints goes to the log, not into the protocol
    sys.stdout = sys.stderr
    sys.path.insert(0, service_dir)
    module_name, function_name = handler_spec.rsplit(".", 1)
    handler = getattr(importlib.import_module(module_name), function_name)
    timeout_s = int(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "30"))
    name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    region = os.environ.get("AWS_REGION", "eu-west-1")
    captured = RecordErrors()
    batch_logger = logging.getLogger(BATCH_LOGGER)
    batch_logger.addHandler(captured)
    batch_logger.setLevel(logging.DEBUG)
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        captured.errors = []
        event = json.loads(line)
        context = LambdaContext(
            function_name=name,
            function_version="$LATEST",
            invoked_function_arn=f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT_ID}:function:{name}",
            memory_limit_in_mb=int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")),
            aws_request_id=str(uuid.uuid4()),
            log_group_name=f"/aws/lambda/{name}",
            log_stream_name="local",
            deadline_ms=int(time.time() * 1000) + timeout_s * 1000,
        )
        try:
            result = handler(event, context)
            reply = {"ok": True, "result": result, "errors": record_errors(result, captured.errors)}
        except Exception as error:  # the runtime reports any handler error as a failed invoke
            traceback.print_exc()
            reply = {
                "ok": False,
                "errorType": type(error).__name__,
                "errorMessage": str(error),
                "errors": record_errors(None, captured.errors, event),
            }
        sys.stderr.flush()
        protocol.write(json.dumps(reply, default=str) + "\n")


if __name__ == "__main__":
    main()
