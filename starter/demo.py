"""Demo load for `ticketflow dev --demo N`: realistic multilingual tickets, then agents working
some of them (replies, waiting on the customer, escalations, resolutions and ratings)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from starter.client import TicketClient, TicketError
from ticketflow.models import Status

# (language, subject, body): written the way customers write, across every department.
SAMPLES: list[tuple[str, str, str]] = [
    (
        "en",
        "Cannot log in since this morning",
        "Hi, since this morning I cannot log in to the dashboard. It shows error 502 after the password step. "
        "Our whole team is blocked.",
    ),
    (
        "en",
        "Charged twice for invoice INV-20931",
        "Hello, my credit card was charged twice for the same invoice this month. Please refund the duplicate.",
    ),
    (
        "en",
        "Pricing for the enterprise plan",
        "We are a team of 80 and would like a quote and a demo of the enterprise plan with SSO.",
    ),
    (
        "en",
        "Wrong item delivered, need an exchange",
        "The router I received is the wrong item (EU plug instead of UK). How do I return it for an exchange?",
    ),
    (
        "en",
        "URGENT: production down, data loss risk",
        "Our production instance is down and the nightly sync reports data loss. This is urgent, please call us.",
    ),
    (
        "en",
        "Feature request: dark mode",
        "Just a suggestion, no rush: a dark mode for the reporting pages would be lovely.",
    ),
    (
        "en",
        "Laptop VPN keeps disconnecting",
        "My company laptop drops the VPN every ten minutes, and the password reset page does not load.",
    ),
    (
        "de",
        "Rechnung doppelt abgebucht",
        "Guten Tag, die Rechnung für März wurde doppelt abgebucht. Bitte erstatten Sie den Betrag. Danke!",
    ),
    (
        "de",
        "Anmelden funktioniert nicht",
        "Hallo, das Anmelden funktioniert nicht mehr, ich bekomme einen Fehler. Bitte helfen Sie uns, es ist dringend.",
    ),
    (
        "de",
        "Urlaubsantrag im Portal",
        "Ich kann meinen Urlaubsantrag im Portal nicht abschicken. Wer ist dafür zuständig?",
    ),
    (
        "es",
        "No puedo iniciar sesión",
        "Hola, no puedo iniciar sesión en mi cuenta desde ayer. Aparece un error. ¿Me pueden ayudar por favor?",
    ),
    (
        "es",
        "Solicitud de reembolso de la factura",
        "Buenos días, pagué la factura dos veces por error. Solicito el reembolso del segundo pago, por favor.",
    ),
    (
        "es",
        "Devolución de un producto dañado",
        "El producto llegó dañado. Quiero hacer la devolución o un cambio por uno nuevo.",
    ),
    (
        "fr",
        "Panne du service depuis ce matin",
        "Bonjour, le service est en panne depuis ce matin, impossible de me connecter. Merci de votre aide.",
    ),
    (
        "fr",
        "Question sur ma facture",
        "Bonjour, je ne comprends pas le montant de ma dernière facture. Pouvez-vous me donner le détail ? Merci.",
    ),
    ("fr", "Demande de devis", "Nous souhaitons un devis pour 40 licences et une démo pour notre équipe. Merci."),
    (
        "pt",
        "Não consigo entrar na minha conta",
        "Olá, não consigo entrar na minha conta desde ontem. Aparece um erro. Podem ajudar, por favor?",
    ),
    (
        "pt",
        "Cobrança duplicada no cartão de crédito",
        "Fui cobrado duas vezes no cartão de crédito pela mesma assinatura. Preciso do reembolso.",
    ),
    (
        "el",
        "Η εφαρμογή δεν λειτουργεί",
        "Καλησπέρα, η εφαρμογή δεν λειτουργεί από το πρωί και εμφανίζει σφάλμα σύνδεσης. Παρακαλώ βοηθήστε μας.",
    ),
    (
        "el",
        "Ερώτηση για το τιμολόγιο",
        "Γεια σας, έχω μια ερώτηση για το τελευταίο τιμολόγιο και τη χρέωση της κάρτας μου.",
    ),
    (
        "ru",
        "Сервис не работает",
        "Здравствуйте, сервис не работает с утра, при входе появляется ошибка. Помогите, пожалуйста, срочно.",
    ),
    (
        "ru",
        "Возврат денег за подписку",
        "Добрый день, с карты дважды списали оплату за подписку. Прошу оформить возврат денег.",
    ),
    (
        "ro",
        "Aplicația nu funcționează",
        "Bună ziua, aplicația nu funcționează de azi dimineață și primesc o eroare. Vă rog să mă ajutați.",
    ),
    (
        "ro",
        "Întrebare despre factură",
        "Bună ziua, am primit factura pentru luna aceasta de două ori. Vă rog să verificați plata.",
    ),
]

NAMES: dict[str, list[str]] = {
    "en": ["Emily Clarke", "Michael Johnson", "Aisha Khan", "Oliver Smith"],
    "de": ["Jonas Müller", "Lea Fischer", "Felix Wagner"],
    "es": ["Lucía García", "Javier Fernández", "Sofía Romero"],
    "fr": ["Camille Bernard", "Hugo Petit", "Chloé Moreau"],
    "pt": ["Beatriz Santos", "Rafael Oliveira", "Mariana Costa"],
    "el": ["Γιώργος Παππάς", "Μαρία Νικολάου"],
    "ru": ["Анна Кузнецова", "Иван Петров"],
    "ro": ["Mihai Ionescu", "Elena Dumitru"],
}
REGIONS = {
    "en": ["NA", "EU", "APAC"],
    "de": ["EU"],
    "es": ["EU", "LATAM"],
    "fr": ["EU"],
    "pt": ["LATAM", "EU"],
    "el": ["EU"],
    "ru": ["EU"],
    "ro": ["EU"],
}
CHANNELS = ["email", "email", "email", "web_form", "chat", "phone", "social", "api"]
RATINGS: list[int | str] = [5, 5, 4, 4, 3, 2, "good", "bad"]
TYPES = ["regular"] * 7 + ["vip", "partner", "reseller"]


def demo_tickets(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        lang, subject, body = SAMPLES[i % len(SAMPLES)] if i < len(SAMPLES) else rnd.choice(SAMPLES)
        name = rnd.choice(NAMES[lang])
        local = f"customer{i + 1}"
        out.append(
            {
                "subject": subject,
                "body": body,
                "customer": {
                    "name": name,
                    "email": f"{local}@example.com",
                    "type": rnd.choice(TYPES),
                    "region": rnd.choice(REGIONS[lang]),
                    "language": lang if rnd.random() < 0.5 else None,
                    "plan": rnd.choice(["free", "team", "business", "enterprise"]),
                },
                "channel": rnd.choice(CHANNELS),
                "external_message_id": f"<demo-{seed}-{i}@mail.example.com>",
                "tags": ["demo"],
            }
        )
    return out


@dataclass
class DemoResult:
    opened: int = 0
    duplicates: int = 0
    actions: Counter[str] | None = None


async def run_demo(client: TicketClient, n: int, console: Console, seed: int = 7) -> DemoResult:
    rnd = random.Random(seed)
    result = DemoResult(actions=Counter())
    assert result.actions is not None
    gate = asyncio.Semaphore(8)
    ids: list[str] = []

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        submit = progress.add_task("opening tickets", total=n)

        async def open_one(payload: dict[str, Any]) -> None:
            async with gate:
                opened = await client.open(payload)
                ids.append(opened.ticket_id)
                result.opened += not opened.duplicate
                result.duplicates += opened.duplicate
                progress.advance(submit)

        await asyncio.gather(*(open_one(p) for p in demo_tickets(n, seed)))

        work = progress.add_task("agents at work", total=len(ids))

        async def drive(ticket_id: str) -> None:
            async with gate:
                try:
                    state = await client.get(ticket_id)
                    if state.status == Status.NEW:
                        state = await client.wait_for(ticket_id, Status.OPEN, within=60)
                    if state.status != Status.OPEN:
                        result.actions[f"already {state.status}"] += 1  # type: ignore[index]
                        progress.advance(work)
                        return
                    agent = state.assignee or "demo-agent"
                    roll = rnd.random()
                    if roll < 0.15:
                        await client.escalate(ticket_id, actor=agent, reason="needs a specialist")
                        result.actions["escalated"] += 1  # type: ignore[index]
                    elif roll < 0.30:
                        await client.reply(ticket_id, agent, "Could you send us a screenshot of the error?", pend=True)
                        await client.customer_reply(ticket_id, "Here it is, the error appears right after login.")
                        result.actions["pended and answered"] += 1  # type: ignore[index]
                    elif roll < 0.75:
                        await client.reply(ticket_id, agent, "Thanks for reaching out, this is now fixed.")
                        await client.resolve(ticket_id, agent, resolution="fixed")
                        result.actions["resolved"] += 1  # type: ignore[index]
                        if rnd.random() < 0.6:
                            await client.rate(ticket_id, rnd.choice(RATINGS))
                            result.actions["rated"] += 1  # type: ignore[index]
                    else:
                        result.actions["left open"] += 1  # type: ignore[index]
                except TicketError as err:  # a demo ticket already driven by an earlier run
                    result.actions[f"skipped ({type(err).__name__})"] += 1  # type: ignore[index]
                progress.advance(work)

        await asyncio.gather(*(drive(t) for t in ids))

    table = Table(title=f"demo: {n} tickets")
    table.add_column("outcome")
    table.add_column("tickets", justify="right")
    table.add_row("opened", str(result.opened))
    table.add_row("already existed (same message id)", str(result.duplicates))
    for action, count in sorted(result.actions.items()):
        table.add_row(action, str(count))
    console.print(table)
    return result
