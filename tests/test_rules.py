"""Rule-based categorisation with the default policy: department, category, priority and language,
each with the reasons that produced it. Pure unit tests; no servers."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from ticketflow.config import Config, default_config
from ticketflow.models import Categorisation, Priority, TicketIn
from ticketflow.rules import categorise, detect_language, keyword_hits, normalise


@pytest.fixture(scope="module")
def cfg() -> Config:
    return default_config()


def make_ticket(
    subject: str,
    body: str,
    *,
    customer_type: str = "regular",
    language: str | None = None,
    channel: str = "email",
) -> TicketIn:
    customer: dict[str, Any] = {"name": "Test Customer", "email": "customer@example.com", "type": customer_type}
    if language is not None:
        customer["language"] = language
    return TicketIn.model_validate({"subject": subject, "body": body, "customer": customer, "channel": channel})


def decide(cfg: Config, subject: str, body: str, **kw: Any) -> Categorisation:
    return categorise(make_ticket(subject, body, **kw), cfg)


def reason(c: Categorisation, prefix: str) -> str:
    found = [r for r in c.reasons if r.startswith(prefix)]
    assert len(found) == 1, (prefix, c.reasons)
    return found[0]


# (subject, body, (department, category, priority, language), rule name, matched keywords)
TICKETS: list[Any] = [
    pytest.param(
        "Dashboard down",
        "Hi, the dashboard is down and we cannot log in. Please help, this is not working for my team.",
        ("technical_support", "outage", "high", "en"),
        "outage",
        ["down", "not working", "cannot log in"],
        id="en-outage",
    ),
    pytest.param(
        "Question about my invoice",
        "Hello, I was charged twice for my subscription this month. Can you please refund the second payment?",
        ("billing", "billing", "high", "en"),
        "billing",
        ["invoice", "refund", "charged", "payment", "subscription"],
        id="en-billing-charged-twice",
    ),
    pytest.param(
        "Pricing for the enterprise plan",
        "Hi, we are evaluating the enterprise plan and would like a quote for 50 seats. No rush, just wondering.",
        ("sales", "sales", "low", "en"),
        "sales",
        ["pricing", "quote", "enterprise plan"],
        id="en-sales-low",
    ),
    pytest.param(
        "Laptop VPN",
        "My VPN does not connect on the new laptop and I need a password reset. Thanks",
        ("it", "internal_it", "normal", "en"),
        "it",
        ["laptop", "vpn", "password reset"],
        id="en-it",
    ),
    pytest.param(
        "Payroll question",
        "Hi, my payroll for this month is missing the vacation days. Can you check my contract?",
        ("hr", "hr", "normal", "en"),
        "hr",
        ["payroll", "vacation", "contract"],
        id="en-hr",
    ),
    pytest.param(
        "Wrong item received",
        "I received the wrong item and the box was damaged. I want to return it for a replacement.",
        ("returns", "returns", "normal", "en"),
        "returns",
        ["return", "damaged", "wrong item", "replacement"],
        id="en-returns",
    ),
    pytest.param(
        "Production down, data loss!",
        "Our production is down since 9:00 and we see data loss. The API returns 503 errors.",
        ("technical_support", "outage", "urgent", "en"),
        "outage",
        ["down", "503"],
        id="en-outage-urgent",
    ),
    pytest.param(
        "Anmeldung geht nicht",
        "Hallo, ich kann mich seit heute nicht anmelden. Es kommt immer ein Fehler. "
        "Bitte helfen Sie mir, das ist dringend.",
        ("technical_support", "outage", "urgent", "de"),
        "outage",
        ["fehler", "anmelden"],
        id="de-outage-urgent",
    ),
    pytest.param(
        "Rechnung doppelt",
        "Guten Tag, wir haben die Rechnung für unser Abonnement doppelt abgebucht bekommen. Bitte um Erstattung.",
        ("billing", "billing", "high", "de"),
        "billing",
        ["rechnung", "erstattung", "abonnement"],
        id="de-billing-high",
    ),
    pytest.param(
        "Umtausch",
        "Hallo, der Artikel ist beschädigt angekommen. Ich möchte einen Umtausch, bitte.",
        ("returns", "returns", "normal", "de"),
        "returns",
        ["umtausch", "beschädigt"],
        id="de-returns",
    ),
    pytest.param(
        "Factura incorrecta",
        "Hola, en mi factura de este mes hay un cobro que no reconozco. Por favor, necesito un reembolso.",
        ("billing", "billing", "normal", "es"),
        "billing",
        ["factura", "reembolso", "cobro"],
        id="es-billing",
    ),
    pytest.param(
        "La aplicación no funciona",
        "Hola, la aplicación no funciona desde ayer y no puedo iniciar sesión. Es urgente, por favor.",
        ("technical_support", "outage", "urgent", "es"),
        "outage",
        ["no funciona", "no puedo iniciar sesión"],
        id="es-outage-urgent",
    ),
    pytest.param(
        "Demande de devis",
        "Bonjour, nous voudrions un devis pour une licence entreprise pour notre équipe. Merci pour votre aide.",
        ("sales", "sales", "normal", "fr"),
        "sales",
        ["devis", "licence"],
        id="fr-sales",
    ),
    pytest.param(
        "Panne du service",
        "Bonjour, le service est en panne depuis ce matin, je ne peux pas me connecter. Merci de vous en occuper.",
        ("technical_support", "outage", "high", "fr"),
        "outage",
        ["panne"],
        id="fr-outage-high",
    ),
    pytest.param(
        "Devolução de produto",
        "Olá, recebi o produto danificado e gostaria de fazer a devolução ou troca. "
        "Obrigado pela atenção, você pode me ajudar?",
        ("returns", "returns", "normal", "pt"),
        "returns",
        ["devolução", "troca", "danificado"],
        id="pt-returns",
    ),
    pytest.param(
        "Sistema fora do ar",
        "Olá, o sistema está fora do ar e não consigo entrar na minha conta. Obrigado.",
        ("technical_support", "outage", "high", "pt"),
        "outage",
        ["fora do ar", "não consigo entrar"],
        id="pt-outage-high",
    ),
    pytest.param(
        "Πρόβλημα με την πληρωμή",
        "Καλησπέρα, έγινε διπλή χρέωση στην κάρτα μου για το τιμολόγιο του μήνα. Παρακαλώ ελέγξτε το.",
        ("billing", "billing", "normal", "el"),
        "billing",
        ["τιμολόγιο", "πληρωμή", "χρέωση"],
        id="el-billing",
    ),
    pytest.param(
        "Η εφαρμογή δεν λειτουργεί",
        "Γεια σας, η εφαρμογή δεν λειτουργεί από το πρωί και εμφανίζει σφάλμα. Είναι επείγον!",
        ("technical_support", "outage", "urgent", "el"),
        "outage",
        ["δεν λειτουργεί", "σφάλμα"],
        id="el-outage-urgent",
    ),
    pytest.param(
        "Сервис не работает",
        "Здравствуйте, сервис не работает с утра, при входе появляется ошибка. Помогите, пожалуйста.",
        ("technical_support", "outage", "high", "ru"),
        "outage",
        ["не работает", "ошибка"],
        id="ru-outage-high",
    ),
    pytest.param(
        "Вопрос по оплате",
        "Добрый день, оплата по счёту прошла дважды, прошу оформить возврат денег.",
        ("billing", "billing", "normal", "ru"),
        "billing",
        ["возврат денег", "оплата"],
        id="ru-billing",
    ),
    pytest.param(
        "Problemă cu factura",
        "Bună ziua, am primit o factură greșită pentru abonament. Vă rog să verificați, mulțumesc.",
        ("billing", "billing", "normal", "ro"),
        "billing",
        ["factură", "factura", "abonament"],
        id="ro-billing",
    ),
    pytest.param(
        "Aplicația nu funcționează",
        "Bună, aplicația nu funcționează și primesc o eroare la autentificare. Este urgent, vă rog.",
        ("technical_support", "outage", "urgent", "ro"),
        "outage",
        ["nu funcționează", "eroare"],
        id="ro-outage-urgent",
    ),
]


@pytest.mark.parametrize(("subject", "body", "expected", "rule", "keywords"), TICKETS)
def test_categorisation_table(
    cfg: Config, subject: str, body: str, expected: tuple[str, str, str, str], rule: str, keywords: list[str]
) -> None:
    c = decide(cfg, subject, body)
    assert (c.department, c.category, c.priority, c.language) == expected, c.reasons
    assert c.spam is False
    # the reasons explain each decision: language, category (rule + keywords), priority
    assert c.reasons[0].startswith(f"language {expected[3]}: ")
    assert reason(c, "category ") == f"category {expected[1]} -> {expected[0]}: rule {rule!r} matched {keywords}"
    assert reason(c, "priority ").startswith(f"priority {expected[2]}: ")


def test_reasons_name_language_evidence(cfg: Config) -> None:
    de = decide(cfg, "Fehler", "Ich kann mich nicht anmelden, bitte helfen Sie mir.")
    assert de.reasons[0] == "language de: 5 de stop-words"  # ich kann nicht bitte sie
    el = decide(cfg, "Σφάλμα", "Η εφαρμογή δεν λειτουργεί από το πρωί.")
    assert el.reasons[0] == "language el: script is el"
    ru = decide(cfg, "Ошибка", "Сервис не работает с утра.")
    assert ru.reasons[0] == "language ru: script is ru"
    unclear = decide(cfg, "502", "ERR 502 / 503")
    assert unclear.language == "en"
    assert unclear.reasons[0] == "language en: no clear language signal; default en"


def test_priority_reason_names_rule_and_keywords(cfg: Config) -> None:
    c = decide(cfg, "URGENT: production down", "Our production is down, please help asap.")
    assert c.priority is Priority.URGENT
    assert (
        reason(c, "priority ") == "priority urgent: rule 'urgent-words' matched ['urgent', 'asap', 'production down']"
    )


def test_first_matching_set_rule_decides_priority(cfg: Config) -> None:
    # both urgent-words ('urgent') and low-words ('no rush') match: the earlier rule wins
    c = decide(cfg, "Feature request", "Not urgent at all, no rush: a feature request for dark mode.")
    assert c.priority is Priority.URGENT
    assert [r for r in c.reasons if r.startswith("priority")] == [
        "priority urgent: rule 'urgent-words' matched ['urgent']"
    ]


def test_default_priority_has_a_reason(cfg: Config) -> None:
    c = decide(cfg, "Invoice copy", "Could you send me a copy of my invoice for March, please?")
    assert c.priority is Priority.NORMAL
    assert reason(c, "priority ") == "priority normal: default"


# --- VIP and partner customers ---------------------------------------------------------------------

RAISE: list[Any] = [
    pytest.param(
        "Invoice copy",
        "Could you send me a copy of my invoice for March, please?",
        "normal",
        "high",
        id="normal->high",
    ),
    pytest.param(
        "Dashboard outage", "The dashboard has an outage, we cannot log in.", "high", "urgent", id="high->urgent"
    ),
    pytest.param(
        "Production down", "This is an emergency: production down for all users.", "urgent", "urgent", id="urgent-stays"
    ),
    pytest.param(
        "Suggestion", "Just a suggestion for the pricing page, no rush at all.", "low", "normal", id="low->normal"
    ),
]


@pytest.mark.parametrize("customer_type", ["vip", "partner"])
@pytest.mark.parametrize(("subject", "body", "regular", "raised"), RAISE)
def test_vip_and_partner_raise_priority_one_step(
    cfg: Config, customer_type: str, subject: str, body: str, regular: str, raised: str
) -> None:
    base = decide(cfg, subject, body)
    assert base.priority == regular
    c = decide(cfg, subject, body, customer_type=customer_type)
    assert c.priority == raised
    raise_reasons = [r for r in c.reasons if " -> " in r and r.startswith("priority")]
    if raised == regular:
        assert raise_reasons == []  # urgent cannot go higher; no misleading reason
    else:
        assert raise_reasons == [f"priority {regular} -> {raised}: rule 'vip-and-partners'"]
    # the rest of the decision is unchanged
    assert (c.department, c.category, c.language) == (base.department, base.category, base.language)


@pytest.mark.parametrize("customer_type", ["regular", "reseller"])
def test_other_customer_types_are_not_raised(cfg: Config, customer_type: str) -> None:
    c = decide(cfg, "Invoice copy", "Could you send me a copy of my invoice, please?", customer_type=customer_type)
    assert c.priority is Priority.NORMAL
    assert not any("vip-and-partners" in r for r in c.reasons)


# --- language ---------------------------------------------------------------------------------------


def test_customer_given_language_wins_over_detection(cfg: Config) -> None:
    subject, body = "Rechnung", "Hallo, ich habe eine Frage zu meiner Rechnung und der Zahlung. Bitte um Hilfe."
    detected = decide(cfg, subject, body)
    assert detected.language == "de"
    given = decide(cfg, subject, body, language="fr")
    assert given.language == "fr"
    assert given.reasons[0] == "language fr: given by the customer"


def test_given_language_selects_the_keyword_list(cfg: Config) -> None:
    # German keywords count first when the ticket's language is German (English always counts); keywords
    # of other languages count only when nothing matched, and the reason says so
    subject, body = "Rechnung", "Hallo, ich habe eine Frage zu meiner Rechnung. Bitte um Hilfe."
    german = decide(cfg, subject, body, language="de")
    assert german.category == "billing" and "any language" not in german.reasons[1]
    misjudged = decide(cfg, subject, body, language="en")
    assert misjudged.category == "billing" and "(keywords of any language)" in misjudged.reasons[1]


def test_unsupported_customer_language_falls_back_to_detection(cfg: Config) -> None:
    c = decide(cfg, "Rechnung", "Hallo, ich habe eine Frage zu meiner Rechnung. Bitte um Hilfe.", language="it")
    assert c.language == "de"
    assert c.reasons[0].startswith("language de: ") and "given by the customer" not in c.reasons[0]


def test_english_keywords_count_in_every_language(cfg: Config) -> None:
    c = decide(cfg, "VPN", "Hallo, mein VPN und der printer gehen nicht. Bitte helfen Sie mir.")
    assert c.language == "de"
    assert c.category == "internal_it"
    assert reason(c, "category ") == "category internal_it -> it: rule 'it' matched ['vpn', 'printer']"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("The app is not working for my team and we have to ship this week.", "en"),
        ("Ich kann mich nicht anmelden, bitte helfen Sie mir mit meinem Konto.", "de"),
        ("Hola, no puedo entrar a mi cuenta, por favor ayúdenme con el acceso.", "es"),
        ("Bonjour, je ne peux pas me connecter avec mon compte, merci pour votre aide.", "fr"),
        ("Olá, não consigo entrar na minha conta, obrigado pela ajuda com o acesso.", "pt"),
        ("Γεια σας, δεν μπορώ να συνδεθώ στον λογαριασμό μου.", "el"),
        ("Здравствуйте, я не могу войти в свою учётную запись.", "ru"),
        ("Bună ziua, nu pot intra în contul meu, vă rog să mă ajutați, mulțumesc.", "ro"),
    ],
)
def test_detect_language(cfg: Config, text: str, language: str) -> None:
    assert detect_language(normalise(text), cfg.languages)[0] == language


def test_detect_language_only_returns_supported_languages() -> None:
    assert detect_language(normalise("Здравствуйте, сервис не работает с утра."), ["en", "de"])[0] == "en"


# --- defaults and matching ------------------------------------------------------------------------


def test_unmatched_text_goes_to_the_default_department(cfg: Config) -> None:
    c = decide(cfg, "Thank you", "Just wanted to say thanks for the great service last week!")
    assert (c.department, c.category, c.priority) == (cfg.default_department, "general", cfg.default_priority)
    assert c.department == "customer_service"
    assert reason(c, "category ") == "category general -> customer_service: no category rule matched"


@pytest.mark.parametrize(
    ("text", "not_matched"),
    [
        pytest.param("Where can I download the tool? The downloads page is fine.", "down", id="download-not-down"),
        pytest.param("The breturn utility and the returned value are fine.", "return", id="breturn-not-return"),
        pytest.param("Our invoices module is fine.", "invoice", id="plural-not-singular"),
        pytest.param("The value of variable vatx is fine.", "vat", id="vatx-not-vat"),
        pytest.param("The status code 5020 is documented.", "502", id="number-prefix"),
        pytest.param("Our rmail gateway is fine.", "rma", id="rmail-not-rma"),
    ],
)
def test_keywords_respect_word_boundaries(cfg: Config, text: str, not_matched: str) -> None:
    all_en = {"en": [kw for rule in cfg.categories for kw in rule.keywords.get("en", [])]}
    assert not_matched in all_en["en"]  # the keyword is really in the default policy
    assert keyword_hits(normalise(text), all_en, "en") == []


def test_word_boundary_download_is_not_an_outage(cfg: Config) -> None:
    c = decide(cfg, "Download link", "Where can I download the breturn tool? The downloads page is fine.")
    assert (c.department, c.category) == ("customer_service", "general")


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        pytest.param("the site is down.", "down", id="before-punctuation"),
        pytest.param("(down) since 9:00", "down", id="in-parentheses"),
        pytest.param("down", "down", id="whole-text"),
        pytest.param("got a 502!", "502", id="number"),
        pytest.param("i can't log in today", "can't log in", id="apostrophe"),
        pytest.param("i cannot\n\n   log   in", "cannot log in", id="whitespace-collapsed"),
    ],
)
def test_keywords_match_at_word_boundaries(text: str, keyword: str) -> None:
    assert keyword_hits(normalise(text), {"en": [keyword]}, "en") == [keyword]


def test_matching_ignores_case_and_unicode_normal_form(cfg: Config) -> None:
    body = unicodedata.normalize("NFD", "HOLA, LA APLICACIÓN NO FUNCIONA Y NO PUEDO INICIAR SESIÓN, POR FAVOR.")
    c = decide(cfg, "CAÍDA", body)
    assert c.language == "es"
    assert c.category == "outage"
    assert reason(c, "category ") == (
        "category outage -> technical_support: "
        "rule 'outage' matched ['caída', 'no funciona', 'no puedo iniciar sesión']"
    )


def test_greek_final_sigma_and_capitals_match(cfg: Config) -> None:
    c = decide(cfg, "ΣΦΆΛΜΑ ΣΤΗΝ ΕΦΑΡΜΟΓΉ", "Η ΕΦΑΡΜΟΓΗ ΔΕΝ ΛΕΙΤΟΥΡΓΕΊ ΑΠΟ ΤΟ ΠΡΩΊ")
    assert c.language == "el"
    assert c.category == "outage"


def test_channel_condition_limits_a_rule(cfg: Config) -> None:
    by_mail = decide(cfg, "Laptop", "My laptop is slow and the printer is offline.")
    assert by_mail.department == "it"
    by_phone = decide(cfg, "Laptop", "My laptop is slow and the printer is offline.", channel="phone")
    assert by_phone.department == "customer_service"
    assert reason(by_phone, "category ").endswith("no category rule matched")


def test_most_hits_wins_and_ties_go_to_the_earlier_rule(cfg: Config) -> None:
    # one billing keyword vs two returns keywords: returns wins
    c = decide(cfg, "Damaged item", "The item arrived damaged, I want a replacement or a refund.")
    assert c.category == "returns"
    # one outage keyword vs one billing keyword: outage is listed first
    c = decide(cfg, "Error on invoice page", "The invoice page shows an error.")
    assert c.category == "outage"
    assert reason(c, "category ") == "category outage -> technical_support: rule 'outage' matched ['error']"


def test_typographic_apostrophe_matches_like_a_straight_one(cfg: Config) -> None:
    """Smart punctuation (Outlook, iOS) sends "can’t"; it must match the keyword "can't log in"
    (a login outage was silently filed as general/normal before normalise() folded it)."""
    straight = decide(cfg, "Login", "Hi, I can't log in to my account since this morning. Please help.")
    curly = decide(cfg, "Login", "Hi, I can’t log in to my account since this morning. Please help.")
    assert (curly.department, curly.category, curly.priority) == ("technical_support", "outage", "high")
    assert curly.reasons == straight.reasons


def test_romanian_cedilla_letters_match_comma_below_keywords(cfg: Config) -> None:
    """Legacy Romanian keyboards type ş/ţ (cedilla); the policy's keywords use ș/ț (comma below)."""
    c = decide(cfg, "Aplicaţia", "Bună, aplicaţia nu funcţionează şi primesc o eroare. Vă rog.")
    assert c.language == "ro"
    assert reason(c, "category ") == (
        "category outage -> technical_support: rule 'outage' matched ['nu funcționează', 'eroare']"
    )
