"""``sealchat send``: one message or file, for scripts and bots."""

from __future__ import annotations

import argparse

import trio

from sealchat.cli.checks import CommandError, check_names, file_problem, text_problem
from sealchat.cli.exit_codes import OK, USAGE, error, explain_failure
from sealchat.cli.login import credentials_from, one_shot, run_session
from sealchat.cli.terminal_text import safe
from sealchat.core import Error as ServerError
from sealchat.core import MessageAck
from sealchat.transports.requests import ClientError, MessageTooLong, TransferFailed, check_text
from sealchat.transports.trio_client import (
    ChatClient,
    ConnectionLost,
    Disconnected,
    LinkState,
)

SEND_HELP = """\
Send one message or file, to a room or to a user, then exit with a code that says how
it went. Only members can send to a room: add --join to join it first (you stay in it).
It logs in quietly: the others do not see you come online and go offline."""


def run_send(args: argparse.Namespace) -> int:
    """``sealchat send``: one message or file, then exit with a code saying how it went."""
    if args.join and args.to:
        error("--join goes with --room: a direct message needs no joining")
        return USAGE
    problem = None if args.file is None else file_problem(args.file)
    if problem is not None:
        error(problem)
        return USAGE
    try:
        check_names(room=args.room, user=args.to or "")
    except CommandError as exc:
        error(str(exc))
        return USAGE
    try:
        check_text(args.text or "")  # over any server's limit; the server's own is the client's
    except MessageTooLong as exc:  # what a server would refuse too, so the same exit code
        code, message = explain_failure(exc)
        error(message)
        return code
    problem = None if args.text is None else text_problem(args.text)
    if problem is not None:
        error(problem)
        return USAGE
    credentials = credentials_from(args)
    if credentials is None:
        return USAGE
    password, _, interactive = credentials

    async def main() -> int:
        async with one_shot(args, interactive) as client:
            # Quietly: a bot posting every minute must not show its user coming online and
            # going offline each time (no Presence for this session).
            await client.login(args.user, password, announce=False)
            room = "" if args.to else args.room
            if args.join:
                await _join(client, room)
            try:
                await _send(client, args, room)
            except TransferFailed:
                if room and not args.join and not await _is_member(client, room):
                    raise TransferFailed(f"you are not in {room}: add --join to join it") from None
                raise
            return OK

    return run_session(main, credentials)


async def _send(client: ChatClient, args: argparse.Namespace, room: str) -> None:
    """Send the file or the message ``args`` give to ``room`` or ``args.to``, and wait until
    the server has it."""
    if args.file is not None:
        try:
            info = await client.send_file(args.file, room=room, to=args.to or "")
        except ConnectionLost as exc:  # the server keeps what it got, for the next try
            raise Disconnected(f"the upload stopped: {exc}; the same command resumes it") from None
        print(f"shared {safe(args.file.name)} as {safe(info.file_id)}")
    else:
        client_id = await client.send_message(args.text, room=room, to=args.to or "")
        await _await_ack(client, client_id)


async def _join(client: ChatClient, room: str) -> None:
    """Join ``room``, creating it if there is none (for a member, the server only lists the
    members); a refusal is one of the message, and exits as such."""
    try:
        await client.join(room)
    except ConnectionLost:
        raise
    except ClientError as exc:
        raise TransferFailed(f"cannot join {room}: {exc}") from None


async def _is_member(client: ChatClient, room: str) -> bool:
    """Whether the user is in ``room`` (asked after a refusal, to say why if not)."""
    return any(info.name == room and info.joined for info in await client.rooms())


async def _await_ack(client: ChatClient, client_id: str) -> None:
    """Wait until the server stored the message (its MessageAck: the outbox empties when the
    server's answer is read, before the events queued ahead of it are taken, a refusal too),
    or say why it refused, or that the connection was lost."""
    with trio.fail_after(30):
        async for event in client.events():
            if isinstance(event, ServerError) and event.ref == client_id:
                raise TransferFailed(event.detail or event.code)
            if isinstance(event, LinkState) and not event.connected:
                raise Disconnected(
                    f"the connection was lost before the server confirmed the message "
                    f"({event.reason or 'no reason given'})"
                )
            if isinstance(event, MessageAck) and event.client_id == client_id:
                return
    raise Disconnected("the connection closed before the server confirmed the message")
