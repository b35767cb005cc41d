"""Site (viewer and up): the logged-in caller's site status as the gateway's drift monitor sees it
(``GetCapabilities.site`` through ``hemascope.client``, with the person's own gateway key), and what a flag
means for the answers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console.web import console_of, render, require
from hemascope.client import HemascopeClientError
from hemascope.site.drift import SiteStatus

#: What each status means for this caller's answers.
MEANINGS = {
    SiteStatus.LEARNING.value: "Too few images yet for a judgement: the gateway is still learning how this "
    "site's images look.",
    SiteStatus.CONSISTENT.value: "This site's recent images look like those the bundle was validated on: "
    "answers are given as usual.",
    SiteStatus.UNVALIDATED.value: "This site's recent images are unlike those the bundle was validated on. "
    "Until the share of atypical images falls back to the clearing share, every answer is referred to a "
    "person and every malignant call is marked unconfirmed: validate (and if needed adapt) the bundle on "
    "this site's own labelled cells.",
    SiteStatus.UNMONITORED.value: "The bundle served has no acquisition reference, so the gateway cannot "
    "tell whether this site's images look like the validated ones.",
}


async def site_page(request: Request) -> Response:
    session = require(request)
    assert session.api_key is not None
    client = console_of(request).client_factory(session.api_key)
    site, problem = None, ""
    try:
        site = (await client.capabilities(timeout=10.0)).site
    except HemascopeClientError as exc:
        problem = f"The gateway did not answer ({exc.code.name}): the site status is not known now."
    finally:
        await client.close()
    context = {
        "site": site,
        "problem": problem,
        "flagged": site is not None and site.status == SiteStatus.UNVALIDATED.value,
        "meaning": MEANINGS.get(site.status, "") if site is not None else "",
    }
    return render(request, "site.html", context)


routes = [Route("/site", site_page, methods=["GET"])]
