"""The survey pages against a real ticket workflow (time-skipping server) and PostgreSQL: only a POST
with a genuine link and a fresh form records an answer; scanners, replays, tampered, expired and
stale links record nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.client import TicketClient
from starter.smtp_sink import SmtpSink
from starter.survey_pages import OUTCOMES, create_app
from tests.conftest import SURVEY_SECRET, WorkerFactory, resolved_with_survey, start_time_skipping, wall_clock
from tests.factories import ticket
from ticketflow import survey
from ticketflow.config import Config, default_config
from ticketflow.models import Status

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


@pytest.fixture(scope="module")
def config() -> Config:
    return wall_clock(default_config())


@pytest_asyncio.fixture(loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping server per test: the Java test server can stop skipping time after a
    workflow it ran was terminated mid-activity (each test here leaves one behind)."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@pytest_asyncio.fixture
async def resolved(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, smtp: SmtpSink
) -> AsyncIterator[tuple[TicketClient, str, str]]:
    """A resolved ticket whose survey went out; yields the client, the ticket id and the survey link."""
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid, token = await resolved_with_survey(ts_env, tickets, smtp)
        yield tickets, tid, f"/survey/{token}"


def web(tickets: TicketClient, config: Config) -> httpx.AsyncClient:
    app = create_app(tickets, SURVEY_SECRET, config.csat)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://survey.test")


def nonce_of(page: str) -> str:
    found = re.search(r'name="nonce" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def answers(pool: Pool, tid: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        rated = await (
            await conn.execute(
                "SELECT detail FROM audit_log WHERE ticket_id = %s AND event = 'rated' ORDER BY seq", (tid,)
            )
        ).fetchall()
    return [r["detail"] for r in rated]


async def test_a_scanner_that_only_fetches_links_records_nothing(
    resolved: tuple[TicketClient, str, str], config: Config, pool: Pool
) -> None:
    tickets, tid, path = resolved
    async with web(tickets, config) as client:
        for score in (1, 5, 3):  # a link checker follows every link in the mail
            page = await client.get(f"{path}?score={score}")
            assert page.status_code == 200 and 'method="post"' in page.text
            assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
        assert (await client.head(path)).status_code in (200, 405)
    assert (await tickets.get(tid)).ratings == [] and await answers(pool, tid) == []


async def test_answer_then_change_it_last_wins_and_every_answer_is_audited(
    resolved: tuple[TicketClient, str, str], config: Config, pool: Pool
) -> None:
    tickets, tid, path = resolved
    async with web(tickets, config) as client:
        form = await client.get(f"{path}?score=1")
        assert re.search(r'value="1" required\s+checked', form.text)  # the score clicked in the mail, preselected
        first = await client.post(
            path, data={"nonce": nonce_of(form.text), "score": "2", "reason": "slow_response", "comment": "so slow"}
        )
        assert first.status_code == 200 and "We recorded 2 (poor)" in first.text
        form = await client.get(path)  # opened again later: a fresh form
        second = await client.post(path, data={"nonce": nonce_of(form.text), "score": "4", "reason": "slow_response"})
        assert second.status_code == 200
    state = await tickets.get(tid)
    assert [(r.score, r.reason, r.via, r.agent) for r in state.ratings] == [(4, None, "survey", "anna")]
    assert [(a["score"], a["reason"], a["comment"]) for a in await answers(pool, tid)] == [
        (2, "slow_response", "so slow"),
        (4, None, ""),  # a reason explains only a bad answer
    ]
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT score, reason, via FROM csat_ratings WHERE ticket_id = %s", (tid,))
        ).fetchone()
    assert row == {"score": 4, "reason": None, "via": "survey"}


async def test_a_replayed_post_records_nothing_twice(
    resolved: tuple[TicketClient, str, str], config: Config, pool: Pool
) -> None:
    tickets, tid, path = resolved
    async with web(tickets, config) as client:
        form = await client.get(path)
        data = {"nonce": nonce_of(form.text), "score": "5"}
        assert (await client.post(path, data=data)).status_code == 200
        again = await client.post(path, data=data)
        assert again.status_code == 200 and "already have this answer" in again.text
        forged = await client.post(path, data={**data, "nonce": "bm90LW91cnM.AAAAAAAAAAAAAAAAAAAAAA"})
        assert forged.status_code == 400
        missing = await client.post(path, data={"score": "5"})
        assert missing.status_code == 400
    assert len(await answers(pool, tid)) == 1


async def test_tampered_and_expired_links_record_nothing(
    resolved: tuple[TicketClient, str, str], config: Config, pool: Pool
) -> None:
    tickets, tid, path = resolved
    token = path.removeprefix("/survey/")
    ticket_id, resolution, expires, tag = token.split(".")
    other = (await tickets.open(ticket())).ticket_id
    tampered = [
        f"{ticket_id}.2.{expires}.{tag}",  # another resolution
        f"{ticket_id}.{resolution}.{int(expires) + 86400 * 30}.{tag}",  # a later expiry
        f"{other}.{resolution}.{expires}.{tag}",  # another ticket
        f"{ticket_id}.{resolution}.{expires}.{tag[:-2]}AA",  # another signature
        "not-a-token",
    ]
    async with web(tickets, config) as client:
        before = await outcomes(client)
        nonce = nonce_of((await client.get(path)).text)
        for bad in tampered:
            page = await client.get(f"/survey/{bad}")
            assert page.status_code == 400 and ("not valid" in page.text or "damaged" in page.text), bad
            post = await client.post(f"/survey/{bad}", data={"nonce": nonce, "score": "5"})
            assert post.status_code == 400, bad
        expired = survey.sign(survey.SurveyClaim(tid, 1, datetime.now(UTC) - timedelta(seconds=1)), SURVEY_SECRET)
        page = await client.get(f"/survey/{expired}")
        assert page.status_code == 410 and "closed" in page.text
        post = await client.post(f"/survey/{expired}", data={"nonce": survey.new_nonce(expired, SURVEY_SECRET)})
        assert post.status_code == 410
        after = await outcomes(client)
    # the pages' own /metrics (Prometheus scrapes survey-pages): every outcome exists, at zero until it happens
    assert set(after) == set(OUTCOMES)
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {
        "form_shown": 1,
        "invalid_link": 2 * len(tampered),
        "expired": 2,
    }
    assert await answers(pool, tid) == []


async def outcomes(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ticketflow_survey_requests_total"
    }


async def test_links_of_an_earlier_resolution_or_a_closed_ticket_record_nothing(
    ts_env: WorkflowEnvironment, resolved: tuple[TicketClient, str, str], config: Config, pool: Pool
) -> None:
    tickets, tid, path = resolved
    async with web(tickets, config) as client:
        nonce = nonce_of((await client.get(path)).text)
        await tickets.customer_reply(tid, "Broken again.")  # reopened: this survey is cancelled
        reopened = await client.post(path, data={"nonce": nonce, "score": "5"})
        assert reopened.status_code == 409 and "no longer open" in reopened.text
        await tickets.resolve(tid, "anna")
        stale = await client.post(path, data={"nonce": nonce_of((await client.get(path)).text), "score": "5"})
        assert stale.status_code == 409 and "earlier resolution" in stale.text
        await ts_env.sleep(timedelta(days=8))
        assert (await tickets.final_state(tid)).status == Status.CLOSED
        late = survey.sign(survey.SurveyClaim(tid, 2, datetime.now(UTC) + timedelta(days=30)), SURVEY_SECRET)
        after = await client.post(
            f"/survey/{late}", data={"nonce": survey.new_nonce(late, SURVEY_SECRET), "score": "5"}
        )
        # the dev server says "closed" (409); the time-skipping server only "not found" (410): both refuse
        assert after.status_code in (409, 410) and "closed" in after.text
    assert await answers(pool, tid) == []


def test_tokens_are_bound_to_the_key_and_round_trip() -> None:
    claim = survey.SurveyClaim("abcdefghijkl", 3, datetime(2030, 1, 1, tzinfo=UTC))
    token = survey.sign(claim, b"k1")
    assert survey.verify(token, b"k1", now=datetime(2029, 12, 31, tzinfo=UTC)) == claim
    with pytest.raises(survey.InvalidToken):
        survey.verify(token, b"k2", now=datetime(2029, 12, 31, tzinfo=UTC))
    with pytest.raises(survey.ExpiredToken):
        survey.verify(token, b"k1", now=datetime(2030, 1, 1, tzinfo=UTC))
    nonce = survey.new_nonce(token, b"k1")
    assert survey.check_nonce(nonce, token, b"k1") == nonce and survey.new_nonce(token, b"k1") != nonce
    with pytest.raises(survey.InvalidToken):
        survey.check_nonce(nonce, token + "x", b"k1")
