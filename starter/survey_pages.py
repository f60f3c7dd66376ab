"""The CSAT survey pages: a small ASGI app (Starlette) behind the signed links of survey emails.

GET only shows a form, so mail scanners and link previews that fetch every link record nothing.
POST records the answer through the ticket workflow's `rate` update, with the resolution the link
was signed for and the form's one-time nonce: a replayed POST, a tampered or expired link, an
answer for an earlier resolution or after the survey closed all record nothing and say why.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from temporalio.service import RPCError

from activities import metrics
from starter.client import (
    DuplicateAnswer,
    InvalidTransition,
    SurveyClosed,
    TicketClient,
    TicketNotFound,
    TicketValidationError,
)
from starter.serving import METRICS_ROUTE, AsgiServer
from ticketflow import survey
from ticketflow.config import Csat

log = logging.getLogger("ticketflow.survey")
MAX_FORM_BYTES = 16 * 1024
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the link is a credential: never leak it to another site
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}
LABELS = {1: "1 (very poor)", 2: "2 (poor)", 3: "3 (fair)", 4: "4 (good)", 5: "5 (excellent)"}
GOOD_BAD = {5: "Good", 1: "Bad"}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow"><title>{{ title }}</title></head>
<body style="font-family: sans-serif; line-height: 1.5; color: #222; max-width: 36em; margin: 2em auto;">
<h1 style="font-size: 1.4em;">{{ title }}</h1>
{% for line in lines %}<p>{{ line }}</p>{% endfor %}
{% if form %}
<form method="post" action="{{ form.action }}">
  <input type="hidden" name="nonce" value="{{ form.nonce }}">
  <fieldset style="border: none; padding: 0;"><legend>How satisfied are you with the help you received?</legend>
  {% for score, label in form.choices %}
    <label style="display: block; margin: .3em 0;"><input type="radio" name="score" value="{{ score }}" required
      {% if score == form.selected %}checked{% endif %}> {{ label }}</label>
  {% endfor %}
  </fieldset>
  <p><label>If it was not good, what went wrong? (optional)<br>
  <select name="reason"><option value="">—</option>
  {% for reason in form.reasons %}<option value="{{ reason }}">{{ reason | replace("_", " ") }}</option>{% endfor %}
  </select></label></p>
  <p><label>Anything you would like to add? (optional)<br>
  <textarea name="comment" rows="4" cols="40" maxlength="2000"></textarea></label></p>
  <p><button type="submit">Send my answer</button></p>
</form>
{% endif %}
</body></html>
"""


OUTCOMES = ("form_shown", "recorded", "duplicate", "closed", "expired", "invalid_link", "invalid_form", "unavailable")


def _count(outcome: str) -> None:
    metrics.inc(metrics.SURVEY_REQUESTS, outcome=outcome)


async def _form(request: Request) -> bytes | None:
    """The form's body, or None past MAX_FORM_BYTES: reading stops there, so a huge body is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 9 or int(declared) > MAX_FORM_BYTES):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return bytes(body)


def create_app(tickets: TicketClient, secret: bytes, csat: Csat) -> Starlette:
    for outcome in OUTCOMES:
        metrics.zero(metrics.SURVEY_REQUESTS, outcome=outcome)
    env = Environment(autoescape=True)
    page = env.from_string(_PAGE)

    def render(status: int, title: str, *lines: str, form: dict[str, Any] | None = None) -> HTMLResponse:
        return HTMLResponse(
            page.render(title=title, lines=lines, form=form), status_code=status, headers=SECURITY_HEADERS
        )

    def choices() -> list[tuple[int, str]]:
        return list(GOOD_BAD.items()) if csat.scale == "good_bad" else list(LABELS.items())

    def claim_of(token: str) -> survey.SurveyClaim | HTMLResponse:
        try:
            return survey.verify(token, secret)
        except survey.ExpiredToken as err:
            _count("expired")
            return render(410, "This survey has closed", f"Sorry, {err}.", "Reply to any of our emails to reach us.")
        except survey.InvalidToken as err:
            _count("invalid_link")
            return render(
                400, "This link is not valid", f"{str(err).capitalize()}.", "Please use the link in the email."
            )

    async def show(request: Request) -> Response:
        token = request.path_params["token"]
        claim = claim_of(token)
        if isinstance(claim, HTMLResponse):
            return claim
        _count("form_shown")
        # by text, not int(): '²' passes str.isdigit and a 5,000-digit score is over int()'s limit
        selected = {str(score): score for score, _ in choices()}.get(request.query_params.get("score", ""))
        closes = claim.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        return render(
            200,
            "How did we do?",
            f"Your answer is about ticket #{claim.ticket_id}. You can change it until {closes}.",
            form={
                "action": f"/survey/{token}",
                "nonce": survey.new_nonce(token, secret),
                "choices": choices(),
                "selected": selected,
                "reasons": csat.bad_reasons,
            },
        )

    async def answer(request: Request) -> Response:
        token = request.path_params["token"]
        claim = claim_of(token)
        if isinstance(claim, HTMLResponse):
            return claim
        body = await _form(request)
        if body is None:
            _count("invalid_form")
            return render(413, "That answer is too long", "Please keep the comment under 2000 characters.")
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        try:
            nonce = survey.check_nonce(form.get("nonce", ""), token, secret)
        except survey.InvalidToken as err:
            _count("invalid_form")
            return render(400, "Please open the link again", f"{str(err).capitalize()}.")
        allowed = dict(choices())
        score = {str(s): s for s in allowed}.get(form.get("score", ""))
        if score is None:
            _count("invalid_form")
            return render(422, "Please choose an answer", f"Choose one of: {', '.join(allowed.values())}.")
        reason = form.get("reason") or None
        if reason is not None and (reason not in csat.bad_reasons or score > 2):
            reason = None  # a reason only explains a bad answer, and only one we offered
        try:
            await tickets.rate(
                claim.ticket_id,
                score,
                comment=form.get("comment", "")[:2000],
                reason=reason,
                resolution=claim.resolution,
                nonce=nonce,
            )
        except DuplicateAnswer:
            _count("duplicate")
            return render(200, "Thank you", "We already have this answer. To change it, open the link again.")
        except (SurveyClosed, InvalidTransition) as err:
            _count("closed")
            return render(409, "This survey is no longer open", f"{err}.", "Reply to any of our emails to reach us.")
        except TicketNotFound:  # the link is genuine, so the ticket existed: its workflow is long finished
            _count("closed")
            return render(410, "This survey has closed", "Reply to any of our emails to reach us.")
        except TicketValidationError as err:
            _count("invalid_form")
            return render(422, "Please check your answer", str(err))
        except (RPCError, ConnectionError, TimeoutError) as err:
            log.warning("survey answer for %s not recorded: %s", claim.ticket_id, err)
            _count("unavailable")
            response = render(503, "Please try again in a minute", "We could not record your answer just now.")
            response.headers["Retry-After"] = "30"
            return response
        _count("recorded")
        closes = claim.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        return render(
            200,
            "Thank you for your answer",
            f"We recorded {allowed[score]} for ticket #{claim.ticket_id}.",
            f"Changed your mind? Open the link from the email again before {closes}; the last answer counts.",
        )

    async def healthz(request: Request) -> Response:
        return Response('{"ok": true}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/survey/{token}", show, methods=["GET"]),
            Route("/survey/{token}", answer, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            METRICS_ROUTE,
        ]
    )


class SurveyServer(AsgiServer):
    def __init__(
        self, tickets: TicketClient, secret: bytes, csat: Csat, host: str = "127.0.0.1", port: int = 8089
    ) -> None:
        super().__init__(create_app(tickets, secret, csat), host, port)
