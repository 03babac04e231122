"""What the README says of Bolt WebSocket: a client claiming any web origin can fail logins over a
WebSocket and so lock a user out for a few seconds; cnngraph then says so in one line, and the lock
is per user (a user of one's own is not affected). Against the real server, with a user made for the
test (locking ``neo4j`` would disturb the session's other tests).
"""

from __future__ import annotations

import struct
import time
import uuid
from typing import Any
from urllib.parse import urlparse

import pytest

from cnngraph.errors import Neo4jError
from cnngraph.loader.connection import connect
from cnngraph.settings import Neo4jSettings

pytestmark = pytest.mark.neo4j
websocket = pytest.importorskip("websocket")  # websocket-client, a dependency of selenium (dev)


def _string(text: str) -> bytes:
    raw = text.encode()
    return (bytes([0x80 + len(raw)]) if len(raw) < 16 else bytes([0xD0, len(raw)])) + raw


def failed_websocket_login(uri: str, user: str) -> bytes:
    """One Bolt 4.4 HELLO with a wrong password over a WebSocket whose Origin is a foreign page."""
    address = urlparse(uri)
    ws = websocket.create_connection(f"ws://{address.hostname}:{address.port}", origin="http://evil.example")
    try:
        ws.send_binary(b"\x60\x60\xb0\x17" + b"\x00\x00\x04\x04" + b"\x00" * 12)
        assert ws.recv() == b"\x00\x00\x04\x04"  # the server speaks Bolt to that page
        fields = ["user_agent", "page/1.0", "scheme", "basic", "principal", user, "credentials", "wrong!"]
        body = bytes([0xB1, 0x01, 0xA4]) + b"".join(_string(f) for f in fields)
        ws.send_binary(struct.pack(">H", len(body)) + body + b"\x00\x00")
        answer = ws.recv()
        return answer if isinstance(answer, bytes) else answer.encode()
    finally:
        ws.close()


def test_a_web_page_can_lock_a_user_out_and_cnngraph_says_so(
    driver: Any, neo4j_settings: Neo4jSettings
) -> None:
    user, password = f"lockme_{uuid.uuid4().hex[:8]}", "a-long-random-password-1"
    try:
        driver.execute_query(
            f"CREATE USER {user} SET PASSWORD $pw CHANGE NOT REQUIRED", pw=password, database_="system"
        )
    except Exception as e:  # an external server may not let the test create users
        pytest.skip(f"cannot create a user here: {e}")
    mine = Neo4jSettings(uri=neo4j_settings.uri, user=user, password=password)
    try:
        connect(mine).close()
        for _ in range(3):
            assert b"Neo.ClientError.Security.Unauthorized" in failed_websocket_login(mine.uri, user)
        with pytest.raises(Neo4jError, match=f"has locked user '{user}' for a few seconds") as caught:
            connect(mine)
        assert "\n" not in str(caught.value)
        driver.verify_connectivity()  # other users are not locked out
        deadline = time.monotonic() + 30
        while True:  # the lock ends after dbms.security.auth_lock_time (5 s)
            try:
                connect(mine).close()
                break
            except Neo4jError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
    finally:
        driver.execute_query(f"DROP USER {user} IF EXISTS", database_="system")
