"""`dataharvest client forget ID` and `dataharvest client personal ID [ENTITY.COLUMN...]`."""

from __future__ import annotations

import argparse
import getpass
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    client = sub.add_parser("client", help="per-client personal data: forget, personal columns")
    csub = client.add_subparsers(dest="action", required=True)
    forget = csub.add_parser(
        "forget", help="crypto-shred a client's personal data (deletes its data key)"
    )
    forget.add_argument("client", metavar="ID")
    forget.add_argument("--json", action="store_true")
    marked = csub.add_parser(
        "personal", help="columns encrypted for this client beyond first/last name"
    )
    marked.add_argument("client", metavar="ID")
    marked.add_argument("columns", metavar="ENTITY.COLUMN", nargs="*")
    upload = csub.add_parser(
        "upload-policy", help="the IAM policy of a partner's upload identity (its own prefix)"
    )
    upload.add_argument("client", metavar="ID")
    upload.add_argument("--account", required=True, help="the AWS account id of the stage")
    upload.add_argument("--key-arn", required=True, help="the LandingBucketKeyArn export")
    upload.add_argument("--stage", default="dev")
    upload.add_argument("--region", default="eu-west-1")
    client.set_defaults(func=cmd_client)


def _usage(message: str) -> SystemExit:
    print(f"dataharvest: {message}", file=sys.stderr)
    return SystemExit(2)


def cmd_client(args: argparse.Namespace) -> int:
    from dataharvest import db
    from dataharvest.persistence.routing import CLIENT_ID, is_client_id
    from dataharvest.security import personal
    from dataharvest_local import client
    from dataharvest_local.cli import home

    if not is_client_id(args.client):
        raise _usage(f"client id {args.client!r} must match ^{CLIENT_ID.pattern}$")
    if args.action == "personal":
        allowed = {f"{e}.{c}" for e, cs in personal.MAY_BE_PERSONAL.items() for c in cs}
        bad = [c for c in args.columns if c not in allowed]
        if bad:
            raise _usage(f"{bad[0]!r} cannot be personal (one of: {', '.join(sorted(allowed))})")
    if args.action == "upload-policy":
        from dataharvest.security.partner_policy import upload_policy

        if not (args.account.isdigit() and len(args.account) == 12):
            raise _usage(f"--account {args.account!r} is not a 12-digit AWS account id")
        if not args.key_arn.startswith("arn:aws:kms:"):
            raise _usage(f"--key-arn {args.key_arn!r} is not a KMS key ARN")
        policy = upload_policy(args.client, args.stage, args.account, args.region, args.key_arn)
        print(json.dumps(policy, indent=2))
        return 0
    client.ensure_stack(home())
    with db.connect() as conn:
        if args.action == "forget":
            key_id = personal.forget(conn, args.client, requested_by=getpass.getuser())
            result = {"client_id": args.client, "key_id": key_id, "forgotten": True}
            if args.json:
                print(json.dumps(result))
            else:
                what = f"data key {key_id} deleted" if key_id else "it had no data key"
                print(f"{args.client}: personal data is unreadable ({what}); erasure recorded")
            return 0
        with conn.transaction():
            conn.execute(
                "INSERT INTO config.client_settings (client_id, personal_columns) "
                "VALUES (%s, %s) ON CONFLICT (client_id) DO UPDATE "
                "SET personal_columns = excluded.personal_columns, updated_at = now()",
                (args.client, sorted(set(args.columns))),
            )
        print(f"{args.client}: personal columns {', '.join(sorted(set(args.columns))) or '-'}")
    return 0
