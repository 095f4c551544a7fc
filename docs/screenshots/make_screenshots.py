"""Make the desktop client's screenshots in this folder.

Run ``python docs/screenshots/make_screenshots.py`` from anywhere.

Starts a private Xvfb and a throwaway sealchat server (in this process) whose #general kept
two messages of yesterday evening, has bob, carol and dave chat a little (today: the
transcript shows both days), logs alice in through the window and writes ``login.png``,
``main-dark.png`` and ``main-light.png`` next to this script. Needs Xvfb (``apt-get install
xvfb``) and the test dependencies (``pip install -e .[test]``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from sealchat.core import Typing  # noqa: E402
from sealchat.core.hub.names import user_key  # noqa: E402
from sealchat.transports.sqlite_store import SqliteStore  # noqa: E402
from tests.gui_harness import open_window, xvfb  # noqa: E402
from tests.servers import PASSWORD, Running, running_server  # noqa: E402

PREFERRED_PORT = 7878


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main() -> int:
    if shutil.which("Xvfb") is None:
        print("make_screenshots needs Xvfb: apt-get install xvfb", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="sealchat-shots-") as folder:
        tmp = Path(folder)
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
        os.environ["XDG_DOWNLOAD_DIR"] = str(tmp / "downloads")
        options = {"port": PREFERRED_PORT} if _port_free(PREFERRED_PORT) else {}
        with (
            xvfb() as display,
            running_server("trio", tmp / "server", **options) as server,
        ):
            os.environ["DISPLAY"] = display
            shoot(server, display, tmp)
    for name in ("login.png", "main-dark.png", "main-light.png"):
        print(HERE / name)
    return 0


def stored_yesterday(tmp: Path) -> None:
    """Two messages of yesterday evening in #general, as the server stored them then."""
    evening = datetime.combine(date.today() - timedelta(days=1), datetime.min.time())
    said = [
        (18, 2, "carol", "The new server build goes out tomorrow morning."),
        (18, 7, "bob", "Great, I'll try it first thing."),
    ]
    with SqliteStore(tmp / "server", beside_server=True) as store:
        for hour, minute, sender, text in said:
            store.append_message(
                ts=(evening + timedelta(hours=hour, minutes=minute)).timestamp(),
                sender_key=user_key(sender),
                sender=sender,
                room="general",
                to_key="",
                to="",
                text=text,
                client_id="",
            )


def shoot(server: Running, display: str, tmp: Path) -> None:
    with server.login("alice") as earlier:  # rooms alice joined in an earlier session
        earlier.join("books")
        earlier.join("random")
    stored_yesterday(tmp)
    bob, carol = server.login("bob"), server.login("carol")
    try:
        bob.join("random")
        with open_window(tmp / "gui.json", display) as window:
            app = window.app
            window.fill_login(server.port, "alice", PASSWORD)
            app.login_form.remember.select()
            window.screenshot("login.png", HERE)
            window.login(server.port, "alice")
            window.until(lambda: len(app.vm.conversations) == 3, "alice's rooms")
            window.until_shown("try it first thing")

            bob.send_message("Morning! Is the new server build out?", room="general")
            carol.send_message(
                "Yes, since nine. Check the key fingerprint when your client asks.",
                room="general",
            )
            window.until_shown("Check the key fingerprint")
            window.type_and_enter("Checked it: it matches the one on the notice board \u2714")
            window.until_shown("notice board")
            notes = tmp / "release-notes.txt"
            notes.write_text("sealchat 0.1.0\n\n- end-to-end Noise XX\n- file transfers\n")
            bob.send_file(notes, room="general")
            bob.send_message("@alice release notes are above, have a look :)", room="general")
            window.until_shown("have a look")
            sketch = tmp / "sketch.png"
            sketch.write_bytes(bytes(range(256)) * 160)
            app.transfers.send_file(sketch)
            window.until_transferred("the upload")
            window.until_shown("sketch.png")
            carol.send_message("Nice sketch \u263a", room="general")
            bob.send_message("who's up for lunch?", room="random")
            bob.send_message("the usual place at 12:30", room="random")
            with server.login("dave") as dave:
                dave.send_message("Can you review my patch later?", to="alice")
                window.until(
                    lambda: app.vm.conversations.get("@dave") is not None, "dave's message"
                )
            window.until(lambda: app.vm.conversation("#random").unread == 2, "#random")
            window.until_shown("Nice sketch")
            window.until(lambda: "dave" not in app.vm.online, "dave gone offline")

            carol.send(Typing(room="general"))
            window.until(lambda: window.typing() == "carol is typing\u2026", "typing")
            window.screenshot("main-dark.png", HERE)
            app.chat.theme_switch.toggle()
            carol.send(Typing(room="general"))
            window.pump(0.5)
            window.screenshot("main-light.png", HERE)
    finally:
        bob.close()
        carol.close()


if __name__ == "__main__":
    sys.exit(main())
