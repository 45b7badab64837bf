"""Organizations, API keys, senders, users, contacts and opt-outs (DESIGN 5.1)."""

from __future__ import annotations

import hashlib
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.errors import Conflict, NotFound, ValidationError
from bridge.keys import authenticate
from bridge.models import ApiKey, Contact
from bridge.organizations import (
    add_sender,
    create_organization,
    create_user,
    find_contact_by_phone,
    find_or_create_contact,
    get_contact,
    get_user,
    help_text_for,
    is_opted_out,
    opt_in,
    opt_out,
    opted_out_hashes,
    organization_for_number,
    sender_numbers,
    update_organization,
)
from bridge.phones import phone_hash
from bridge.runtime import Runtime
from bridge.settings import Settings
from tests import factories


def test_create_organization_returns_the_key_once_and_stores_only_its_hash(
    session: Session, settings: Settings
) -> None:
    made = create_organization(session, settings, "  Acme  ", ["+1 (628) 555-0100"])
    session.commit()
    assert made.organization.id.startswith("org_")
    assert made.organization.name == "Acme"
    rows = list(session.execute(select(ApiKey)).scalars())
    assert len(rows) == 1
    assert rows[0].key_hash == hashlib.sha256(made.api_key.encode()).hexdigest()
    assert made.api_key not in {rows[0].key_hash, rows[0].prefix}
    assert len(rows[0].prefix) < len(made.api_key) // 4
    assert sender_numbers(session, made.organization.id) == ["+16285550100"]


def test_authenticate_accepts_the_key_and_refuses_others(
    session: Session, settings: Settings
) -> None:
    org, key = factories.organization(session, settings)
    other, other_key = factories.organization(session, settings, "Other")
    session.commit()
    found = authenticate(session, key)
    assert found is not None and found.id == org.id
    found_other = authenticate(session, other_key)
    assert found_other is not None and found_other.id == other.id
    assert authenticate(session, key + "x") is None
    assert authenticate(session, "") is None
    assert authenticate(session, "brk_" + "a" * 500) is None
    assert authenticate(session, hashlib.sha256(key.encode()).hexdigest()) is None


def test_a_revoked_key_no_longer_authenticates(session: Session, settings: Settings) -> None:
    org, key = factories.organization(session, settings)
    row = session.execute(select(ApiKey).where(ApiKey.organization_id == org.id)).scalar_one()
    row.revoked_at = utcnow()
    session.commit()
    assert authenticate(session, key) is None


def test_organization_name_is_required(session: Session, settings: Settings) -> None:
    for bad in ["", "   ", None, 7, "x" * 201]:
        with pytest.raises(ValidationError) as info:
            create_organization(session, settings, bad)  # type: ignore[arg-type]
        assert info.value.param == "name"


def test_update_organization_changes_name_and_help_text(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings, "Acme")
    assert "Acme" in help_text_for(org) and "STOP" in help_text_for(org)
    update_organization(session, org.id, name="Acme Two", help_text="Call us on 555.")
    assert org.name == "Acme Two"
    assert help_text_for(org) == "Call us on 555."
    with pytest.raises(ValidationError) as info:
        update_organization(session, org.id, help_text="x" * 1601)
    assert info.value.param == "help_text"
    with pytest.raises(NotFound):
        update_organization(session, "org_nope", name="x")


def test_senders_are_normalized_and_have_one_owner(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings, senders=0)
    other, _ = factories.organization(session, settings, "Other", senders=0)
    assert add_sender(session, settings, org.id, "(628) 555-0101") == "+16285550101"
    # Adding it again, in another format, is the same number of the same owner.
    assert add_sender(session, settings, org.id, "+1 628 555 0101") == "+16285550101"
    assert sender_numbers(session, org.id) == ["+16285550101"]
    with pytest.raises(Conflict) as info:
        add_sender(session, settings, other.id, "16285550101")
    assert info.value.param == "sender"
    with pytest.raises(ValidationError) as bad:
        add_sender(session, settings, org.id, "not a number")
    assert bad.value.param == "sender"
    session.commit()
    owner = organization_for_number(session, "+16285550101")
    assert owner is not None and owner.id == org.id
    assert organization_for_number(session, "+16285550199") is None


def test_users(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    other, _ = factories.organization(session, settings, "Other")
    user = create_user(
        session, settings, org.id, "Uma", email="uma@example.com", phone="4155550123"
    )
    assert user.id.startswith("usr_")
    assert user.phone == "+14155550123"
    assert get_user(session, org.id, user.id) is user
    with pytest.raises(NotFound):
        get_user(session, other.id, user.id)
    with pytest.raises(NotFound):
        get_user(session, org.id, "usr_missing")
    with pytest.raises(ValidationError) as info:
        create_user(session, settings, org.id, "Uma", email="not-an-email")
    assert info.value.param == "email"
    with pytest.raises(ValidationError) as info:
        create_user(session, settings, org.id, "")
    assert info.value.param == "name"


def test_find_or_create_contact_by_phone_in_any_format(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    other, _ = factories.organization(session, settings, "Other")
    first, created = find_or_create_contact(session, settings, org.id, "+14155550123", name="Jane")
    assert created and first.id.startswith("cnt_")
    assert first.phone == "+14155550123"
    assert first.phone_hash == phone_hash(org.id, "+14155550123", settings.phone_hash_key)
    for same in ["(415) 555-0123", "415.555.0123", "1 415 555 0123", " +1-415-555-0123 "]:
        again, created = find_or_create_contact(session, settings, org.id, same)
        assert (again.id, created) == (first.id, False)
    theirs, created = find_or_create_contact(session, settings, other.id, "4155550123")
    assert created and theirs.id != first.id
    assert find_contact_by_phone(session, settings, org.id, "415 555 0123") is first
    assert find_contact_by_phone(session, settings, org.id, "415 555 0124") is None
    assert get_contact(session, org.id, first.id) is first
    with pytest.raises(NotFound):
        get_contact(session, other.id, first.id)


def test_a_name_fills_in_a_known_contact_without_one(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    nameless, _ = find_or_create_contact(session, settings, org.id, "+14155550123")
    assert nameless.name is None
    named, _ = find_or_create_contact(session, settings, org.id, "+14155550123", name="Jane")
    assert named is nameless and named.name == "Jane"
    # A known name is not overwritten by whoever asks next.
    find_or_create_contact(session, settings, org.id, "+14155550123", name="Mallory")
    assert nameless.name == "Jane"


@pytest.mark.parametrize("bad", ["", "12", "hello", "+1 415 555 012", "911", "ACME", None])
def test_an_invalid_contact_phone_names_the_field(
    session: Session, settings: Settings, bad: object
) -> None:
    org, _ = factories.organization(session, settings)
    with pytest.raises(ValidationError) as info:
        find_or_create_contact(session, settings, org.id, bad, param="subscribers[0].phone")  # type: ignore[arg-type]
    assert info.value.param == "subscribers[0].phone"


def test_opt_out_and_in(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    other, _ = factories.organization(session, settings, "Other")
    jane = factories.contact(session, settings, org)
    digest = jane.phone_hash
    assert not is_opted_out(session, org.id, digest)
    assert opt_out(session, org.id, digest) is True
    assert opt_out(session, org.id, digest) is False
    assert is_opted_out(session, org.id, digest)
    assert not is_opted_out(session, other.id, digest)
    assert opted_out_hashes(session, org.id, [digest, "0" * 64]) == {digest}
    assert opted_out_hashes(session, org.id, []) == set()
    session.commit()
    assert opt_in(session, org.id, digest) is True
    assert opt_in(session, org.id, digest) is False
    assert not is_opted_out(session, org.id, digest)


def _count_contacts(runtime: Runtime, organization_id: str) -> int:
    with runtime.sessions() as s:
        return int(
            s.execute(
                select(func.count()).where(Contact.organization_id == organization_id)
            ).scalar_one()
        )


def test_threads_racing_to_create_one_contact_get_one_contact(
    runtime: Runtime, settings: Settings
) -> None:
    with runtime.sessions() as s:
        org, _ = factories.organization(s, settings)
        s.commit()
    racers = 6
    barrier = threading.Barrier(racers)
    results: list[str] = []
    errors: list[BaseException] = []

    def race(fmt: str) -> None:
        try:
            with runtime.sessions() as s:
                barrier.wait(timeout=10)
                contact, _ = find_or_create_contact(s, settings, org.id, fmt, name="Jane")
                s.commit()
                results.append(contact.id)
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    formats = ["+14155550123", "(415) 555-0123", "4155550123", "1-415-555-0123"]
    threads = [threading.Thread(target=race, args=(formats[i % 4],)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(results) == racers and len(set(results)) == 1
    assert _count_contacts(runtime, org.id) == 1


def test_a_request_that_loses_the_insert_race_gets_the_winners_contact(
    runtime: Runtime, settings: Settings
) -> None:
    """The winner has inserted, not committed, when the loser tries: the loser waits, then reads."""
    with runtime.sessions() as s:
        org, _ = factories.organization(s, settings)
        s.commit()
    inserted = threading.Event()
    winner: list[str] = []

    def first() -> None:
        with runtime.sessions() as s:
            contact, created = find_or_create_contact(s, settings, org.id, "+14155550123")
            assert created
            winner.append(contact.id)
            inserted.set()
            threading.Event().wait(0.5)  # hold the row uncommitted while the other one tries
            s.commit()

    t = threading.Thread(target=first)
    t.start()
    assert inserted.wait(10)
    with runtime.sessions() as s:
        contact, created = find_or_create_contact(s, settings, org.id, "415 555 0123")
        s.commit()
    t.join(10)
    assert winner == [contact.id]
    assert created is False
    assert _count_contacts(runtime, org.id) == 1


def test_a_contacts_email_and_name_are_checked_where_they_were_given(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    for field, value in [("email", "not an email"), ("email", 5), ("name", 7), ("name", "x" * 201)]:
        with pytest.raises(ValidationError) as info:
            find_or_create_contact(
                session,
                settings,
                org.id,
                factories.phone(),
                param="subscribers[2].phone",
                **{field: value},  # type: ignore[arg-type]
            )
        assert info.value.param == f"subscribers[2].{field}"
    made, _ = find_or_create_contact(session, settings, org.id, factories.phone(), email="a@b.co")
    assert made.email == "a@b.co"


def test_two_organizations_adding_one_sender_at_once_leave_one_owner(
    runtime: Runtime, settings: Settings
) -> None:
    with runtime.sessions() as s:
        first, _ = factories.organization(s, settings, senders=0)
        second, _ = factories.organization(s, settings, "Second", senders=0)
        s.commit()
    inserted = threading.Event()

    def add_first() -> None:
        with runtime.sessions() as s:
            add_sender(s, settings, first.id, "+16285550142")
            inserted.set()
            threading.Event().wait(0.5)  # hold it uncommitted while the other one tries
            s.commit()

    t = threading.Thread(target=add_first)
    t.start()
    assert inserted.wait(10)
    with runtime.sessions() as s, pytest.raises(Conflict):
        add_sender(s, settings, second.id, "+16285550142")
    t.join(10)
    with runtime.sessions() as s:
        owner = organization_for_number(s, "+16285550142")
        assert owner is not None and owner.id == first.id
