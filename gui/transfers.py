"""File transfers of the desktop client: uploads and downloads, each a trio task with a
row in the window that shows its progress and can cancel it."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Awaitable, Callable
from pathlib import Path
from tkinter import filedialog
from typing import TYPE_CHECKING

import trio

from sealchat.gui.transfer_state import TransferState
from sealchat.gui.viewmodel import Change
from sealchat.transports.requests import ClientError
from sealchat.transports.trio_client import ChatClient

if TYPE_CHECKING:
    from sealchat.gui.app import App


class Transfers:
    """The transfers under way, each cancellable until it ends."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.vm = app.vm
        self._transfer_scopes: dict[int, trio.CancelScope] = {}

    def choose_file(self) -> None:
        """Send the file chosen in the file dialog, if any (and if the window is still open:
        the dialog fails when it is closed meanwhile)."""
        try:
            path = filedialog.askopenfilename(parent=self.app, title="Send a file")
        except tk.TclError:
            if self.app.window_open():
                raise
            return
        if path:
            self.send_file(Path(path))

    def send_file(self, path: Path) -> None:
        room, user = self.vm.conversation(self.vm.current).target

        async def upload(client: ChatClient, progress: Callable[[int, int], None]) -> str:
            try:
                await client.send_file(path, room=room, to=user, progress=progress)
            except OSError as exc:  # gone, or unreadable, since the file dialog chose it
                raise ClientError(f"cannot read it: {exc.strerror or exc}") from exc
            return ""

        self.app.redraw(self.vm.dismiss_error())
        self._transfer(path.name, upload, upload=True)

    def download(self, file_id: str) -> None:
        """Download ``file_id``, unless it is being downloaded (a double click on its link)."""
        if self.vm.downloading(file_id):
            return
        info = next(
            (m.file for m in self.vm.current_messages() if m.file and m.file.file_id == file_id),
            None,
        )

        async def fetch(client: ChatClient, progress: Callable[[int, int], None]) -> str:
            return str(await client.download(file_id, progress=progress, expected=info))

        name = info.name if info else file_id  # shown escaped
        self._transfer(name, fetch, upload=False, file_id=file_id)

    def _transfer(
        self,
        name: str,
        run: Callable[[ChatClient, Callable[[int, int], None]], Awaitable[str]],
        *,
        upload: bool,
        file_id: str = "",
    ) -> None:
        """Start a transfer row for ``name`` (a download: of ``file_id``) and
        ``run(client, progress)`` (which returns the row's detail) in a task; a failure or a
        cancel ends the row saying so, as does a session that ended (while the file dialog
        was open)."""
        transfer = self.vm.start_transfer(name, upload=upload, file_id=file_id)

        async def go() -> None:
            client = self.app.controller.client
            if client is None:
                again = "send it again" if upload else "download it again"
                detail = f"not connected: log in, then {again}"
                self.app.redraw(
                    self.vm.transfer_finished(transfer.id, TransferState.FAILED, detail)
                )
                return
            with trio.CancelScope() as scope:
                self._transfer_scopes[transfer.id] = scope
                try:
                    detail = await run(client, self._progress(transfer.id))
                    state = TransferState.DONE
                except ClientError as exc:
                    state, detail = TransferState.FAILED, str(exc)
                except Exception as exc:  # a bug: the row ends, the guard reports it
                    failed = TransferState.FAILED
                    reason = f"{type(exc).__name__}: {exc}"
                    self.app.redraw(self.vm.transfer_finished(transfer.id, failed, reason))
                    raise
                finally:
                    self._transfer_scopes.pop(transfer.id, None)
                self.app.redraw(self.vm.transfer_finished(transfer.id, state, detail))
            if scope.cancelled_caught:
                self.app.redraw(self.vm.transfer_finished(transfer.id, TransferState.CANCELLED))

        self.app.redraw(self.vm.dismiss_error() | {Change.TRANSFERS})
        self.app.spawn(go)

    def cancel_transfer(self, transfer_id: int) -> None:
        scope = self._transfer_scopes.get(transfer_id)
        if scope is not None:
            scope.cancel()

    def cancel_all(self) -> None:
        """Cancel every transfer under way (the user is logging out)."""
        for scope in self._transfer_scopes.values():
            scope.cancel()

    def show_folder(self, transfer_id: int) -> None:
        """Show the folder a finished download was saved in, in the file manager."""
        transfer = self.vm.transfers.get(transfer_id)
        saved = None if transfer is None else transfer.saved_to
        if saved is None:
            return
        try:
            self.app.show_folder(saved.parent)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            said = f"No file manager could be opened ({reason}); the file is in {saved}"
            self.app.redraw(self.vm.failed(said))

    def dismiss_transfer(self, transfer_id: int) -> None:
        self.app.redraw(self.vm.dismiss_transfer(transfer_id))

    def _progress(self, transfer_id: int) -> Callable[[int, int], None]:
        return lambda done, total: self.app.redraw(
            self.vm.transfer_progress(transfer_id, done, total)
        )
