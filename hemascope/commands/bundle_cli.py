"""``hemascope bundle promote``: make the classifier serve another bundle, from the command line.

It calls the gateway's administrative ``GatewayAdminService.PromoteBundle`` through :mod:`hemascope.client`,
the call the console's Jobs page makes, so an administrator can promote without the console. The gateway
allows it only for an API key whose role is admin, and audits it. The command names the gateway's current
bundle and asks before promoting (``--yes`` does not ask).

Exit status: 0 promoted; 1 nothing promoted because the gateway or the classifier could not be reached or
did not finish in time, or the prompt was declined; 2 the command must change (no API key, a refused key,
a key without the admin role, a path the classifier cannot take); 3 the promotion was refused (the bundle
did not load, the classifier does not accept the path or the gateway's admin identity), the previous
bundle still serving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hemascope.commands.addresses import gateway_address_option
from hemascope.commands.failures import EXIT_FAILURE, EXIT_USAGE, fail

if TYPE_CHECKING:
    from hemascope.client import HemascopeClient, HemascopeClientError, TlsConfig

COMMAND = "bundle promote"
EXIT_REFUSED = 3
CAPABILITIES_TIMEOUT_S = 15.0


@click.group("bundle")
def bundle_group() -> None:
    """Model bundles at a running gateway."""


def _manifest_version(path: Path) -> str:
    """``bundle_version`` from a bundle folder this machine can read ("" when it cannot or does not say)."""
    try:
        version = json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("bundle_version", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return str(version)


def target_path(bundle: str) -> tuple[str, str]:
    """The path to send (as the classifier sees it) and the bundle's version when it can be read here. A
    folder found here is sent as its absolute path; any other path must already be absolute, since the
    classifier would read a relative one from its own working directory."""
    local = Path(bundle)
    if local.is_dir():
        return str(local.absolute()), _manifest_version(local)
    if not local.is_absolute():
        raise click.BadParameter(
            f"{bundle!r} is not a folder here: give the bundle's absolute path as the classifier service "
            "sees it",
            param_hint="BUNDLE",
        )
    return bundle, ""


def failure(exc: HemascopeClientError, address: str, *, tls: bool) -> tuple[str, int]:
    """One line saying why nothing was promoted, and the exit status (see the module docstring)."""
    from hemascope.commands.errors import gateway_failure

    code, reason = exc.code.name, exc.reason
    if code == "PERMISSION_DENIED" and reason == "ADMIN_ROLE_REQUIRED":
        return (
            f"the gateway at {address} refused: this API key does not have the admin role (an admin makes "
            "one with `hemascope gateway add-key NAME --role admin`)",
            EXIT_USAGE,
        )
    if code == "INVALID_ARGUMENT":  # BAD_PATH
        return f"refused ({reason}): {exc.message}", EXIT_USAGE
    if code in ("FAILED_PRECONDITION", "PERMISSION_DENIED"):  # BAD_BUNDLE, RELOAD_PATH_REFUSED, ADMIN_ONLY
        return f"refused ({reason}): {exc.message}; the previous bundle keeps serving", EXIT_REFUSED
    if code == "UNAVAILABLE" and exc.detail is not None:  # the gateway answered: the classifier did not
        return f"the gateway could not reach the classifier ({reason}): {exc.message}", EXIT_FAILURE
    if code == "DEADLINE_EXCEEDED":
        return f"{exc.message} (--timeout SECONDS waits longer)", EXIT_FAILURE
    return gateway_failure(exc, address, api_key=True, tls=tls)


def serving_version(client: HemascopeClient, address: str, tls: bool) -> str:
    """The bundle the gateway serves now ("" when it cannot say); exits when the gateway cannot be reached
    or refuses the key, before anything is asked."""
    from hemascope.client import HemascopeClientError

    try:
        return client.capabilities(timeout=CAPABILITIES_TIMEOUT_S).bundle_version
    except HemascopeClientError as exc:
        if exc.code.name == "UNAUTHENTICATED" or (exc.code.name == "UNAVAILABLE" and exc.detail is None):
            fail(COMMAND, *failure(exc, address, tls=tls))
        return ""


@bundle_group.command("promote")
@click.argument("bundle")
@gateway_address_option()
@click.option(
    "--api-key",
    envvar="HEMASCOPE_API_KEY",
    default=None,
    help="A gateway API key whose role is admin [env HEMASCOPE_API_KEY].",
)
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TLS: CA to trust.")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="mTLS: cert.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="mTLS: key.")
@click.option("--tls", "use_tls", is_flag=True, help="TLS with the system's CAs (implied by --ca).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1.0),
    default=180.0,
    show_default=True,
    help="Seconds to wait for the classifier to load and verify the bundle.",
)
@click.option("--yes", "-y", is_flag=True, help="Promote without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
def promote_command(
    bundle: str,
    address: str,
    api_key: str | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    use_tls: bool,
    timeout: float,
    yes: bool,
    as_json: bool,
) -> None:
    """Make the classifier behind the gateway serve BUNDLE to every caller.

    BUNDLE is the bundle's folder as the classifier service sees it (a folder found here is sent as its
    absolute path). The gateway allows this only for an API key whose role is admin and records it in its
    audit trail; the classifier loads and verifies the bundle in full before it serves it, and keeps the
    previous one when it does not load. Exit status: 0 promoted; 1 unreachable, too slow, or not confirmed;
    2 the command must change (API key, admin role, path); 3 refused (the previous bundle keeps serving).
    """
    from hemascope.client import HemascopeClient, HemascopeClientError, TlsConfig

    if not api_key:
        fail(
            COMMAND,
            "promoting needs a gateway API key whose role is admin: pass --api-key KEY or set "
            "HEMASCOPE_API_KEY",
            EXIT_USAGE,
        )
    path, version = target_path(bundle)
    use = use_tls or ca is not None or cert is not None or key is not None
    tls: TlsConfig | None = TlsConfig(ca=ca, cert=cert, key=key) if use else None
    with HemascopeClient(address, api_key=api_key, tls=tls, timeout=timeout) as client:
        current = serving_version(client, address, tls is not None)
        if not yes:
            named = f"{path} (bundle {version})" if version else path
            now = f"bundle {current}" if current else "a bundle it could not name"
            question = (
                f"The gateway at {address} serves {now}. Make the classifier serve {named} to every caller "
                "instead?"
            )
            try:
                confirmed = click.confirm(question, default=False, err=True)
            except click.Abort:
                confirmed = False
            if not confirmed:
                fail(COMMAND, "not confirmed; nothing was promoted", EXIT_FAILURE)
        try:
            reply = client.promote_bundle(path, timeout=timeout)
        except HemascopeClientError as exc:
            fail(COMMAND, *failure(exc, address, tls=tls is not None))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "path": path,
                    "bundle_version": reply.bundle_version,
                    "previous_version": reply.previous_version,
                    "model_count": reply.model_count,
                }
            )
        )
    else:
        click.echo(
            f"promoted: bundle {reply.bundle_version} now serving (was {reply.previous_version or 'none'}; "
            f"{reply.model_count} models)"
        )
