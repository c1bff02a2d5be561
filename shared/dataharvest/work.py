"""The work message catapult sends a transformer: what to do, for which client and date, decided
on which input versions. Its idempotency key is deterministic, so a redelivered stream record
or a re-sent message maps to the same key and runs at most once."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Action = Literal["APPLY", "RETRACT"]


@dataclass(frozen=True)
class WorkMessage:
    client_id: str
    business_date: str  # YYYYMMDD, as in the metastore sort key
    transformer: str
    action: Action
    input_versions: dict[str, str]
    trigger: dict[str, Any] = field(default_factory=dict)
    replay: str | None = None  # a replay id forces a re-run of unchanged inputs

    @property
    def idempotency_key(self) -> str:
        identity = {
            "client_id": self.client_id,
            "business_date": self.business_date,
            "transformer": self.transformer,
            "action": self.action,
            "input_versions": self.input_versions,
            "replay": self.replay,
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"{self.transformer}:{digest[:32]}"

    def to_json(self) -> str:
        return json.dumps(
            {**asdict(self), "idempotency_key": self.idempotency_key}, sort_keys=True, default=str
        )

    @classmethod
    def from_json(cls, body: str | dict[str, Any]) -> WorkMessage:
        data = json.loads(body) if isinstance(body, str) else dict(body)
        data.pop("idempotency_key", None)
        return cls(**data)


def output_version(input_versions: dict[str, str]) -> str:
    """What `<name>_version` holds after a run on these input versions, and what downstream
    transformers watch: it changes whenever the output was recomputed from different inputs."""
    return hashlib.sha256(json.dumps(input_versions, sort_keys=True).encode()).hexdigest()[:16]
