"""Tests of agent.py against a scripted daemon on a Unix socket (no atlasbridged needed).

    cd docs/examples && python3 -m unittest -v test_agent

The end-to-end tests (tests/tests/e2e/python_client.rs) run agent.py against the real daemon.
"""

import contextlib
import io
import json
import os
import shutil
import socket
import tempfile
import threading
import unittest

import agent


class FakeDaemon:
    """Accepts connections on a Unix socket and answers each request line with what `handler`
    returns: a list of messages (dicts) or raw lines (bytes)."""

    def __init__(self, handler):
        self.dir = tempfile.mkdtemp(prefix="ab-py-", dir="/tmp")
        self.path = os.path.join(self.dir, "d.sock")
        self.handler = handler
        self.requests = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            # Closing the socket alone would leave the connection open under the file.
            with conn, conn.makefile("rb") as reader:
                for line in reader:
                    request = json.loads(line)
                    self.requests.append(request)
                    replies = self.handler(request)
                    if replies is None:
                        break
                    for reply in replies:
                        if isinstance(reply, dict):
                            reply = json.dumps(reply).encode() + b"\n"
                        try:
                            conn.sendall(reply)
                        except OSError:
                            break

    def close(self):
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def result(request, value):
    return {"jsonrpc": "2.0", "id": request["id"], "result": value}


def error(request_id, code, message, data=None):
    body = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": body}


def entry(seq):
    return {"jsonrpc": "2.0", "method": "trace.entry",
            "params": {"seq": seq, "action_taken": "auto_reply", "entry_hash": "h{}".format(seq)}}


def answer(action, reply_value=""):
    return {"action": action, "reply_value": reply_value, "matched_rule": "r",
            "explanation": "because", "seq": 7}


class DaemonTestCase(unittest.TestCase):
    def daemon(self, handler):
        fake = FakeDaemon(handler)
        self.addCleanup(fake.close)
        return fake

    def client(self, fake):
        client = agent.AtlasBridgeClient.connect(fake.path, timeout=5)
        self.addCleanup(client.close)
        return client


class SocketPath(unittest.TestCase):
    def test_the_variable_wins_and_is_made_absolute(self):
        env = {"ATLASBRIDGE_SOCKET": "/tmp/x.sock", "XDG_RUNTIME_DIR": "/run/user/1"}
        self.assertEqual(agent.default_socket_path(env, "linux"), "/tmp/x.sock")
        relative = agent.default_socket_path({"ATLASBRIDGE_SOCKET": "x.sock"}, "linux")
        self.assertEqual(relative, os.path.join(os.getcwd(), "x.sock"))

    def test_linux_uses_the_runtime_directory_then_the_state_directory(self):
        self.assertEqual(
            agent.default_socket_path({"XDG_RUNTIME_DIR": "/run/user/1", "HOME": "/h"}, "linux"),
            "/run/user/1/atlasbridge/atlasbridged.sock")
        for env in ({"HOME": "/h"}, {"HOME": "/h", "XDG_RUNTIME_DIR": ""},
                    {"HOME": "/h", "XDG_RUNTIME_DIR": "relative"},
                    {"HOME": "/h", "ATLASBRIDGE_SOCKET": ""}):
            self.assertEqual(agent.default_socket_path(env, "linux"),
                             "/h/.local/state/atlasbridge/atlasbridged.sock", env)
        self.assertEqual(
            agent.default_socket_path({"HOME": "/h", "XDG_STATE_HOME": "/s"}, "linux"),
            "/s/atlasbridge/atlasbridged.sock")

    def test_macos_and_windows(self):
        self.assertEqual(
            agent.default_socket_path({"HOME": "/Users/me"}, "darwin"),
            "/Users/me/Library/Application Support/dev.atlasbridge.atlasbridge/run/"
            "atlasbridged.sock")
        self.assertEqual(agent.default_socket_path({"USERNAME": "me"}, "win32"),
                         r"\\.\pipe\atlasbridged-me")


class Calls(DaemonTestCase):
    def test_notifications_and_other_replies_are_skipped_while_waiting(self):
        fake = self.daemon(lambda r: [entry(0), result({"id": 999}, "not yours"),
                                      result(r, {"pid": 1})])
        client = self.client(fake)
        self.assertEqual(client.status(), {"pid": 1})
        self.assertEqual(client.status(), {"pid": 1})
        self.assertEqual([r["id"] for r in fake.requests], [1, 2])
        self.assertEqual(fake.requests[0]["method"], "daemon.status")
        self.assertNotIn("params", fake.requests[0])
        self.assertEqual(len(client._pending), 0, "no subscription: nothing kept")

    def test_a_daemon_error_carries_its_code_message_and_data(self):
        fake = self.daemon(lambda r: [error(r["id"], -32602, "bad field", {"field": "x"})])
        with self.assertRaises(agent.AtlasBridgeError) as caught:
            self.client(fake).evaluate("s", "p", "yes_no", "Continue?", "high")
        e = caught.exception
        self.assertEqual((e.code, e.message, e.data), (-32602, "bad field", {"field": "x"}))
        self.assertFalse(e.is_deny)
        self.assertEqual(str(e), "bad field (code -32602)")

    def test_deny_codes(self):
        for code, deny in ((-32001, True), (-32004, True), (-32005, False)):
            self.assertEqual(agent.AtlasBridgeError("m", code).is_deny, deny, code)

    def test_an_error_with_a_null_id_answers_the_request(self):
        fake = self.daemon(lambda r: [error(None, -32700, "parse error")])
        with self.assertRaises(agent.AtlasBridgeError) as caught:
            self.client(fake).status()
        self.assertEqual(caught.exception.code, -32700)

    def test_params_leave_out_what_is_not_given(self):
        fake = self.daemon(lambda r: [result(r, {"seq": 3})])
        client = self.client(fake)
        client.record("s", "p", "yes_no", "human_reply", reply_value="y", branch=None)
        self.assertEqual(fake.requests[0]["params"], {
            "session_id": "s", "prompt_id": "p", "prompt_type": "yes_no",
            "action_taken": "human_reply", "reply_value": "y"})

    def test_carriage_returns_and_blank_lines_are_tolerated(self):
        def handler(r):
            line = json.dumps(result(r, "ok")).encode()
            return [b"\n  \t\n", line[:5], line[5:] + b"\r\n"]
        self.assertEqual(self.client(self.daemon(handler)).call("x"), "ok")

    def test_an_over_long_line_is_refused(self):
        fake = self.daemon(lambda r: [b"x" * (agent.MAX_LINE_BYTES + 10)])
        with self.assertRaisesRegex(agent.AtlasBridgeError, "1 MiB"):
            self.client(fake).status()

    def test_a_closed_connection_and_a_missing_daemon(self):
        fake = self.daemon(lambda r: None)
        with self.assertRaises(agent.ConnectionClosed):
            self.client(fake).status()
        with self.assertRaisesRegex(agent.AtlasBridgeError, "not running"):
            agent.AtlasBridgeClient.connect(fake.path + ".missing")

    def test_a_late_answer_is_a_timeout(self):
        fake = self.daemon(lambda r: [])
        client = agent.AtlasBridgeClient.connect(fake.path, timeout=0.05)
        self.addCleanup(client.close)
        with self.assertRaisesRegex(agent.AtlasBridgeError, "did not answer"):
            client.status()


class Subscriptions(DaemonTestCase):
    def test_entries_come_in_order_then_the_end_is_raised(self):
        def handler(r):
            # Replayed entries may come before the answer.
            return [entry(1), result(r, {"from_seq": 1, "head": None}), entry(2), entry(3),
                    {"jsonrpc": "2.0", "method": "trace.subscription_ended",
                     "params": {"reason": "shutdown", "last_seq": 3}}]
        subscription = self.client(self.daemon(handler)).subscribe(1, timeout=5)
        self.assertEqual(subscription.started["from_seq"], 1)
        seqs = []
        with self.assertRaises(agent.SubscriptionEnded) as caught:
            for item in subscription:
                seqs.append(item["seq"])
        self.assertEqual(seqs, [1, 2, 3])
        self.assertEqual((caught.exception.reason, caught.exception.resume_from),
                         ("shutdown", 4))
        self.assertEqual(list(subscription), [], "nothing after the end")

    def test_one_subscription_per_connection(self):
        client = self.client(self.daemon(lambda r: [result(r, {"from_seq": 0, "head": None})]))
        client.subscribe()
        with self.assertRaisesRegex(agent.AtlasBridgeError, "already"):
            client.subscribe()


class Main(DaemonTestCase):
    def run_main(self, handler, *extra):
        fake = self.daemon(handler)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = agent.main(["--socket", fake.path, "--prompt", "Continue?"] + list(extra))
        return status, out.getvalue(), err.getvalue(), fake

    def test_the_exit_status_is_the_answer(self):
        for action, status in (("auto_reply", 0), ("require_human", 10), ("deny", 11),
                               ("notify_only", 12), ("something_new", 10)):
            got, out, _, _ = self.run_main(lambda r, a=action: [result(r, answer(a, "y"))])
            self.assertEqual(got, status, action)
            self.assertIn(action, out)

    def test_a_human_reply_is_recorded(self):
        def handler(r):
            if r["method"] == "decision.evaluate":
                return [result(r, answer("require_human"))]
            return [result(r, {"seq": 8})]
        status, out, _, fake = self.run_main(handler, "--human-reply", "n")
        self.assertEqual(status, 10)
        self.assertEqual([r["method"] for r in fake.requests],
                         ["decision.evaluate", "decision.record"])
        self.assertEqual(fake.requests[1]["params"]["prompt_id"],
                         fake.requests[0]["params"]["prompt_id"])
        self.assertIn("recorded at seq 8", out)

    def test_every_error_is_a_deny(self):
        status, _, err, _ = self.run_main(lambda r: [error(r["id"], -32001, "no policy")])
        self.assertEqual(status, 11)
        self.assertIn("-32001", err)
        status, _, err, _ = self.run_main(lambda r: [result(r, "not an object")])
        self.assertEqual(status, 11, err)
        status, _, err, _ = self.run_main(lambda r: None)
        self.assertEqual(status, 11)
        self.assertIn("closed", err)


if __name__ == "__main__":
    unittest.main()
