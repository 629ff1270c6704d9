"""`m4v keys create`: a new API key, printed once, with the M4V_API_KEYS entry that stores only its hash."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

keys_app = typer.Typer(no_args_is_help=True, help="API keys (Bearer tokens, stored hashed).")


@keys_app.command("create")
def create_cmd(
    key_id: Annotated[str, typer.Argument(help="the key's id: its jobs' owner (A-Z a-z 0-9 _ . -)")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object: id, key, entry")] = False,
) -> None:
    """Make a key. The key itself is shown only now; the server stores the entry "<id>:<sha256 hex>"."""
    from service.auth import key_entry, new_api_key

    key = new_api_key()
    try:
        entry = key_entry(key_id, key)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        sys.stdout.write(json.dumps({"id": key_id, "key": key, "entry": entry}) + "\n")
        return
    sys.stdout.write(
        f"API key (shown once; give it to the client as 'Authorization: Bearer <key>'):\n  {key}\n"
        f"Add this entry to the server's M4V_API_KEYS JSON list (Helm: secrets.apiKeys):\n  {entry}\n"
    )
