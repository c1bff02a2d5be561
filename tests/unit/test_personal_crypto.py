"""Field-level encryption (security/personal.py) without any service: AES-GCM round trip,
wrong key, altered value, a value moved to another client or column."""

from __future__ import annotations

import os

import pytest

from dataharvest.security.personal import UNAVAILABLE, DataKey, PersonalDataError, decrypt_rows


def key(client: str = "acme", key_id: str = "k1") -> DataKey:
    return DataKey(key_id, client, os.urandom(32))


def test_round_trip_and_fresh_nonces():
    k = key()
    tokens = k.encrypt_many("first_name", ["Ada", "Ada", "Zoë 客户"])
    assert tokens[0] != tokens[1]  # same clear text, different ciphertext
    assert "Ada" not in "".join(tokens)
    assert [k.decrypt("first_name", t) for t in tokens] == ["Ada", "Ada", "Zoë 客户"]


def test_the_wrong_key_fails():
    token = key().encrypt("first_name", "Ada")
    with pytest.raises(PersonalDataError):
        key().decrypt("first_name", token)


def test_a_value_moved_to_another_column_or_client_or_altered_fails():
    k = key()
    token = k.encrypt("first_name", "Ada")
    with pytest.raises(PersonalDataError):
        k.decrypt("last_name", token)
    with pytest.raises(PersonalDataError):
        DataKey(k.key_id, "other-client", k.plaintext).decrypt("first_name", token)
    altered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(PersonalDataError):
        k.decrypt("first_name", altered)


class NoKeys:
    """A connection whose client has no data key any more (forgotten)."""

    def execute(self, *_args):
        return self

    def fetchone(self):
        return None


def test_rows_of_a_forgotten_key_show_unavailable():
    token = key().encrypt("first_name", "Ada")
    records = [
        {"client_reference": "C1", "first_name": token, "last_name": None, "personal_key_id": "k1"},
        {"client_reference": "C2", "first_name": None, "last_name": None, "personal_key_id": None},
    ]
    out = decrypt_rows(NoKeys(), "acme", records, ("first_name", "last_name"), kms=object())
    assert out == [
        {"client_reference": "C1", "first_name": UNAVAILABLE, "last_name": None},
        {"client_reference": "C2", "first_name": None, "last_name": None},
    ]
