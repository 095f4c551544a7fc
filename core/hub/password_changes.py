"""Users changing their own password (ChangePassword, protocol §9.13).

The old password's check is a login's: it is throttled by the same back-off and allowances
(``Logins``), and a wrong one counts as a failed login, so that the change is no faster way to
guess a password than logging in. Then the new password is hashed and stored, and the user's
other sessions are logged out as after the operator's ``sealchat user passwd``; the session
that changed it stays logged in. A change whose session is gone before it is stored (closed,
or logged out by the operator changing the password or removing the account meanwhile) is
dropped: the password changes only if the client can be told so.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sealchat.core.hub.config import HubConfig
from sealchat.core.hub.effects import Effect, HashPassword, VerifyPassword
from sealchat.core.hub.logins import Logins
from sealchat.core.hub.outgoing import error, reply
from sealchat.core.hub.session import PendingChange, Session
from sealchat.core.hub.store import Store
from sealchat.core.records import (
    CHANGE_IN_PROGRESS,
    GENERIC_LOGIN_FAILURE,
    PASSWORD_REF,
    ChangePassword,
    LoginRejected,
    PasswordChanged,
)

WRONG_PASSWORD = "the current password is wrong"  # noqa: S105
"""Error.detail for a wrong old password: no more than a failed login tells."""


class PasswordChanges:
    """ChangePassword records and the outcomes of their password checks."""

    def __init__(
        self, store: Store, config: HubConfig, logins: Logins, log_out: Callable[[], list[Effect]]
    ) -> None:
        self.store = store
        self.config = config
        self._logins = logins
        self._log_out = log_out
        """Log out the sessions logged in before a password change (AccountChanges)."""

    def request(self, state: Session, record: ChangePassword, now: float) -> list[Effect]:
        """A ChangePassword on logged-in ``state``: the old password's check, or a refusal."""
        if state.change is not None:
            return [error(state, "in_progress", CHANGE_IN_PROGRESS, PASSWORD_REF)]
        refused = self._logins.throttled(state, state.key, now)
        if refused is not None:
            return [self._refusal(state, refused)]
        minimum = self.config.min_password_chars
        if len(record.new_password) < minimum:
            detail = f"a password needs at least {minimum} characters"
            return [error(state, "bad_password", detail, PASSWORD_REF)]
        user = self.store.get_user(state.key)
        if user is None:  # removed: the next check of accounts logs the session out
            return []
        refused = self._logins.take_allowances(state, state.key, False, now)
        if refused is not None:
            return [self._refusal(state, refused)]
        state.change = PendingChange(record.new_password)
        return [VerifyPassword(state.id, state.name, record.old_password, user.password_hash)]

    def verified(self, state: Session, ok: bool, now: float) -> list[Effect]:
        """The old password's check ended: hash the new one, or refuse."""
        change = state.change
        if change is None:
            return []
        refused = self._logins.check_ended(state, state.key, ok, now)
        if refused is not None:
            state.change = None
            return [self._refusal(state, refused)]
        change.hashing = True
        return [HashPassword(state.id, state.name, change.new_password)]

    def hashed(self, state: Session, password_hash: str) -> list[Effect]:
        """The new password is hashed: store it, keep ``state`` logged in (at the new
        generation) and log out the user's other sessions."""
        state.change = None
        if not self.store.set_password(state.key, password_hash):
            return []  # removed meanwhile: the next check of accounts logs the session out
        user = self.store.get_user(state.key)
        if user is not None:
            state.password_generation = user.password_generation
        return [reply(state, PasswordChanged()), *self._log_out()]

    @staticmethod
    def _refusal(state: Session, refused: LoginRejected) -> Effect:
        """A login's refusal as the Error refusing a change: a wrong password, or a throttle
        (whose reason says when to try again)."""
        if refused.reason != GENERIC_LOGIN_FAILURE:
            return error(state, "rate_limited", refused.reason, PASSWORD_REF)
        detail = WRONG_PASSWORD
        if refused.retry_after > 0:
            detail += f"; try again in {math.ceil(refused.retry_after)} s"
        return error(state, "wrong_password", detail, PASSWORD_REF)
