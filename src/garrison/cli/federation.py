"""`garrison federation`: this gateway's tier identity (the key a central tier lists it by)."""

from __future__ import annotations

from pathlib import Path

import typer

from garrison.cli.common import ConfigOption, fail, print_json, settings_from_flags

federation_app = typer.Typer(help="Tiers: this gateway's signing key and name (docs/scale.md, \"Tiers\").",
                             no_args_is_help=True)


@federation_app.command("public-key")
def public_key(
    config: Path = ConfigOption,
    home: Path = typer.Option(None, help="State directory (default ~/.garrison; env GARRISON_HOME)."),
    pem: bool = typer.Option(False, "--pem", help="Print the PEM instead of one line of base64."),
    as_json: bool = typer.Option(False, "--json", help="Print name, key file and public key as JSON."),
) -> None:
    """Print this gateway's Ed25519 public key (creating its key file, 0600, if missing), for a central
    tier's `[[federation.peers]] public_key`."""
    from garrison.errors import GarrisonError
    from garrison.security.federation import key_path, load_signer, public_key_text

    settings = settings_from_flags(config, home=home)
    settings.ensure_home()
    try:
        signer = load_signer(settings)
    except GarrisonError as exc:
        fail(exc.message, code=2)
    text = signer.public_pem().decode().strip() if pem else public_key_text(signer)
    if as_json:
        print_json({"name": signer.issuer, "key_file": str(key_path(settings)), "public_key": text})
    else:
        typer.echo(text)


def register(app: typer.Typer) -> None:
    app.add_typer(federation_app, name="federation")
