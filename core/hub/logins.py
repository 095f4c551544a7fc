"""Logins and registrations, with their throttling: back-off after failures, a cap on checks
in progress per address, allowances of password checks per address and per account and of
new accounts per address, a time limit for logging in."""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Callable

from sealchat.core import limits
from sealchat.core.hub.config import HubConfig
from sealchat.core.hub.effects import Disconnect, Effect, HashPassword, SessionId, VerifyPassword
from sealchat.core.hub.names import user_key, username_problem
from sealchat.core.hub.outgoing import pages, reply
from sealchat.core.hub.ratelimit import Allowances, Backoff
from sealchat.core.hub.roster import Roster
from sealchat.core.hub.session import Session
from sealchat.core.hub.store import Store
from sealchat.core.records import (
    CHANGE_PASSWORD,
    GENERIC_LOGIN_FAILURE,
    NAME_LOOKS_TAKEN,
    NAME_TAKEN,
    READ_MARKERS,
    Authenticated,
    Login,
    LoginRejected,
    OnlineUsers,
    Presence,
    Register,
)

KNOWN_ADDRESSES = 8
"""Addresses remembered per user as ones it logged in from (the latest)."""


class Logins:
    """Login and Register records, the password checks' outcomes, and what a login sends."""

    def __init__(
        self,
        store: Store,
        config: HubConfig,
        roster: Roster,
        replay: Callable[[Session], list[Effect]],
    ) -> None:
        self.store = store
        self.config = config
        self._roster = roster
        self._replay = replay
        """The first page of what the user missed, sent after the login."""
        self._user_failures: dict[str, Backoff] = defaultdict(Backoff)
        self._address_failures: dict[str, Backoff] = defaultdict(Backoff)
        self._known_addresses: dict[str, OrderedDict[str, None]] = {}
        """Per user, the latest addresses it logged in from: the user's back-off does not
        apply there, so failures from elsewhere cannot lock the user out of them."""
        minute, hour = 60.0, 3600.0
        self._address_checks = Allowances(
            config.address_logins_per_minute / minute, config.address_login_burst
        )
        self._user_checks = Allowances(
            config.user_logins_per_minute / minute, config.user_login_burst
        )
        self._registrations = Allowances(
            config.registrations_per_hour / hour, config.registration_burst
        )

    def login(self, state: Session, record: Login | Register, now: float) -> list[Effect]:
        """A Login or Register record: the password check to run, or a refusal."""
        if state.key or state.login_pending:
            return [reply(state, LoginRejected(reason="a login is already in progress"))]
        key = user_key(record.username)
        refused = self.throttled(state, key, now)
        if refused is not None:
            return [reply(state, refused)]
        registering = isinstance(record, Register)
        if isinstance(record, Register):
            problem = self._registration_problem(record)
            if problem:
                return [reply(state, LoginRejected(reason=problem))]
        refused = self.take_allowances(state, key, registering, now)
        if refused is not None:
            return [reply(state, refused)]
        state.announce = record.announce
        if registering:
            state.login_pending = True
            state.password_generation = 0  # a new account's, not that of an earlier attempt
            return [HashPassword(state.id, record.username, record.password)]
        user = self.store.get_user(key)
        state.login_pending = True
        state.password_generation = 0 if user is None else user.password_generation
        return [
            VerifyPassword(
                state.id,
                record.username,
                record.password,
                None if user is None else user.password_hash,
            )
        ]

    def throttled(self, state: Session, key: str, now: float) -> LoginRejected | None:
        """The refusal of a password check for user ``key`` on ``state`` before anything
        else is looked at: while the user or the address backs off, or while the address has
        too many checks in progress (logins and password changes); None if it may go on."""
        blocked = self._blocked(key, state.address, now)
        if blocked is not None:
            return blocked
        pending = sum(
            1
            for s in self._roster.at_address(state.address)
            if s.login_pending or s.change is not None
        )
        if pending >= self.config.max_pending_logins:
            reason = "too many logins in progress from your address; try again in a moment"
            return LoginRejected(reason=reason, retry_after=1.0)
        return None

    def _blocked(self, key: str, address: str, now: float) -> LoginRejected | None:
        """The refusal to give while the user (except at an address it logged in from
        before) or the address is backing off, if it is."""
        known = address in self._known_addresses.get(key, ())
        user = None if known else self._user_failures.get(key)
        backoffs = (user, self._address_failures.get(address))
        wait = max((b.wait(now) for b in backoffs if b is not None), default=0.0)
        if wait <= 0:
            return None
        reason = f"too many failed attempts; try again in {math.ceil(wait)} s"
        return LoginRejected(reason=reason, retry_after=wait)

    def take_allowances(
        self, state: Session, key: str, registering: bool, now: float
    ) -> LoginRejected | None:
        """Take a password check from the address's and the account's allowances (and a new
        account from the address's, when ``registering``); or, if one of them is used up, take
        nothing and return the refusal, which names the one with the longest wait. At an
        address the user logged in from before, the account's allowance is not asked (as the
        back-off is not): guesses from elsewhere must not lock the user out of it."""
        address = state.address
        buckets = [(self._address_checks.of(address, now), "too many logins from your address")]
        state.account_check = address not in self._known_addresses.get(key, ())
        if state.account_check:
            buckets.append((self._user_checks.of(key, now), "too many logins to this account"))
        if registering:
            bucket = self._registrations.of(address, now)
            buckets.append((bucket, "too many new accounts from your address"))
        wait, why = max((bucket.wait(now), why) for bucket, why in buckets)
        if wait > 0:
            reason = f"{why}; try again in {math.ceil(wait)} s"
            return LoginRejected(reason=reason, retry_after=wait)
        for bucket, _why in buckets:
            bucket.take(now)
        return None

    def _registration_problem(self, record: Register) -> str | None:
        if not self.config.open_registration:
            return "registration is closed on this server; ask its operator for an account"
        problem = username_problem(record.username)
        if problem:
            return problem
        problem = self._name_problem(record.username)
        if problem:
            return problem
        if len(record.password) < self.config.min_password_chars:
            return f"a password needs at least {self.config.min_password_chars} characters"
        return None

    def _name_problem(self, username: str) -> str | None:
        """Why ``username`` cannot be registered now, being taken or looking like a name
        that is, or None."""
        key = user_key(username)
        if self.store.get_user(key) is not None or self.store.is_retired(key):
            return NAME_TAKEN  # retired too: a removed account's DMs keep it
        if self.store.looks_taken(key):
            return NAME_LOOKS_TAKEN  # AIice (capital i) would pass for alice
        return None

    def password_hashed(
        self, session: SessionId, username: str, password_hash: str, now: float
    ) -> list[Effect]:
        """The outcome of a HashPassword effect: create the account and log in."""
        state = self._roster.sessions.get(session)
        if state is None or not state.login_pending:
            return []
        state.login_pending = False
        # Again: a look-alike may have been registered while the password was hashed.
        problem = self._name_problem(username)
        if problem is None and not self.store.add_user(username, user_key(username), password_hash):
            problem = NAME_TAKEN  # by another process, just now
        if problem:
            return [reply(state, LoginRejected(reason=problem))]
        return self._log_in(state, username, now)

    def password_verified(
        self, session: SessionId, username: str, ok: bool, now: float
    ) -> list[Effect]:
        """The outcome of a VerifyPassword effect for ``username``."""
        state = self._roster.sessions.get(session)
        if state is None or not state.login_pending:
            return []
        state.login_pending = False
        key = user_key(username)
        user = self.store.get_user(key) if ok else None
        refused = self.check_ended(state, key, user is not None, now)
        if refused is not None:
            return [reply(state, refused)]
        assert user is not None  # no user is a wrong password, refused above
        if user.password_generation != state.password_generation:
            reason = "the password was changed while it was checked; log in again"
            return [reply(state, LoginRejected(reason=reason))]
        return self._log_in(state, user.name, now)

    def check_ended(self, state: Session, key: str, ok: bool, now: float) -> LoginRejected | None:
        """A password check for user ``key`` on ``state`` ended (``ok``: the password was
        right): the refusal to give, or None. Checks that ran side by side were all allowed
        to start: a block that one of them caused applies to the others' results too (no
        failure counted). A wrong password counts a failure on the user's and the address's
        back-off; either gives the account's allowance its check back."""
        blocked = self._blocked(key, state.address, now)
        if blocked is not None or not ok:
            self._give_back_account_check(state, key, now)
        if blocked is not None:
            return blocked
        if ok:
            return None
        wait = 0.0
        for backoff in (self._user_failures[key], self._address_failures[state.address]):
            backoff.fail(
                now,
                free=self.config.free_login_failures,
                base=self.config.login_backoff_base,
                cap=self.config.login_backoff_max,
            )
            wait = max(wait, backoff.wait(now))
        return LoginRejected(reason=GENERIC_LOGIN_FAILURE, retry_after=wait)

    def _give_back_account_check(self, state: Session, key: str, now: float) -> None:
        """A login that was no login (a wrong password, or refused by a block after its
        check) gives its account back the check it took."""
        if state.account_check:
            state.account_check = False
            self._user_checks.of(key, now).give_back()

    def _log_in(self, state: Session, name: str, now: float) -> list[Effect]:
        key = user_key(name)
        # The user's count goes, unless this login came through its block at a known address:
        # guesses elsewhere stay throttled. The address keeps its own count: one account of an
        # attacker's must not wipe the failures of its guesses.
        failures = self._user_failures.get(key)
        if failures is None or not failures.wait(now):
            self._user_failures.pop(key, None)
        state.key, state.name = key, name
        known = self._known_addresses.setdefault(key, OrderedDict())
        known[state.address] = None
        known.move_to_end(state.address)
        if len(known) > KNOWN_ADDRESSES:
            known.popitem(last=False)
        roster = self._roster
        roster.names[key] = name
        roster.online[key].add(state.id)
        announced = state.announce and key not in roster.announcing
        if state.announce:
            roster.announcing[key].add(state.id)
        authenticated = Authenticated(
            username=name,
            conversations=tuple(self.store.direct_peers(key, limits.MAX_LIST)),
            max_file_size=min(self.config.max_file_size, limits.MAX_UINT),
            features=(CHANGE_PASSWORD, READ_MARKERS),
            max_message_chars=min(self.config.max_message_chars, limits.MAX_TEXT),
        )
        effects: list[Effect] = [reply(state, authenticated)]
        default = self.config.default_room
        if self.store.add_member(default, key):
            roster.member_set(default).add(key)
            effects += roster.membership_changed(default, key, joined=True)
        if announced:  # the user's first announcing session: it comes online
            effects += roster.to_presence_audience(key, Presence(user=name, online=True))
        effects += self._online_users(state)
        state.replay_from = self.store.get_cursor(key, state.device)
        if state.device:  # known from now on: what other devices read is replayed to it
            self.store.set_cursor(key, state.replay_from, state.device)
        state.replay_until = self.store.last_message_id()
        effects += self._replay(state)
        return effects

    def _online_users(self, state: Session) -> list[Effect]:
        roster = self._roster
        users = sorted(
            roster.names[k] for k in roster.presence_audience(state.key) if k in roster.announcing
        )
        return [reply(state, OnlineUsers(users=page, more=more)) for page, more in pages(users)]

    def expire(self, now: float) -> list[Effect]:
        """Forget old login failures; close the connections that never logged in in time."""
        horizon = now - 2 * self.config.login_backoff_max  # outlives the longest block
        for failures in (self._user_failures, self._address_failures):
            for stale in [k for k, b in failures.items() if b.last_failure < horizon]:
                del failures[stale]
        for allowances in (self._address_checks, self._user_checks, self._registrations):
            allowances.forget_full(now)
        sessions = self._roster.sessions
        late = now - self.config.login_timeout
        idle = [
            s.id for s in sessions.values() if not s.key and not s.login_pending and s.opened < late
        ]
        effects: list[Effect] = []
        for session in idle:
            self._roster.remove_session(session)  # forgotten now; the driver closes it
            reason = f"log in within {self.config.login_timeout:g} s of connecting"
            effects.append(Disconnect(session, reason))
        return effects
