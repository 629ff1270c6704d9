"""`m4v keys create`: a new API key, printed once, with the entry that stores only its hash: one line of the
keys file (M4V_API_KEYS_FILE, re-read by the API without a restart) or an item of the M4V_API_KEYS list."""

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
    """Make a key. The key itself is shown only now; the server stores
    the entry "<id>:<sha256 hex>".

    Append the entry as one line to the keys file (M4V_API_KEYS_FILE;
    Helm: the Secret named by auth.apiKeysSecret): the API picks it up
    within M4V_API_KEYS_RELOAD_S, no restart. Or add it to the
    M4V_API_KEYS JSON list (Helm: secrets.apiKeys) and restart the API.
    """
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
        f"Its entry (the server stores only this):\n  {entry}\n"
        "Append the entry to the keys file (M4V_API_KEYS_FILE; the API re-reads it within\n"
        "M4V_API_KEYS_RELOAD_S, no restart; the leading newline guards a last line without one):\n"
        f"  {append_command(entry)}\n"
        "  Kubernetes: put the updated file in the Secret named by the chart's auth.apiKeysSecret (README).\n"
        "Or add it to the M4V_API_KEYS JSON list (Helm: secrets.apiKeys) and restart the API.\n"
    )


def append_command(entry: str) -> str:
    """A shell line that appends entry to $M4V_API_KEYS_FILE as a line of its own."""
    return f"printf '\\n%s\\n' '{entry}' >> \"$M4V_API_KEYS_FILE\""


@keys_app.command("webhook-secret")
def webhook_secret_cmd(
    key_id: Annotated[str, typer.Argument(help="the key's id (its jobs' owner)")],
) -> None:
    """Print the webhook signing secrets of a key, current first (two
    during a rotation), from this environment's M4V_WEBHOOK_SECRET,
    M4V_WEBHOOK_SECRET_PREVIOUS and M4V_WEBHOOK_KEY_SECRETS, as the API and
    the workers compute them. The tenant verifies its webhooks with them
    (it can also read them with GET /webhook-secret)."""
    from m4v_core.settings import CommonSettings
    from m4v_core.webhook_signing import SigningSecrets

    secrets = SigningSecrets.from_settings(CommonSettings()).for_owner(key_id)
    if not secrets:
        raise typer.BadParameter("M4V_WEBHOOK_SECRET is not set: no webhook is signed or sent")
    sys.stdout.write("".join(f"{s}\n" for s in secrets))
